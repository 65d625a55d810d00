"""Weighted k-NN classification exactly as DINO's ``eval_knn.py``.

Features are L2-normalised, similarity is the cosine, each of the k nearest training
features votes for its label with weight ``exp(sim / T)``; the prediction is the argmax of
the summed votes. Test features are processed in ``chunks`` so memory stays
``O(chunk x n_train)``. All ``ks`` share one top-k search (at ``max(ks)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.health import health_metrics


@torch.no_grad()
def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, ks=(10, 20, 100, 200), T: float = 0.07,
                 chunks: int = 100, progress: bool = False) -> dict[int, dict[str, float]]:
    """``{k: {"top1": %, "top5": %}}``."""
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]}, test features "
                         f"{test_features.shape[1]}: extract both with the same feature")
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels differ in length")
    ks = sorted(int(k) for k in ks)
    if ks[0] < 1:
        raise ValueError(f"k must be >= 1, got {ks}")
    kmax = min(ks[-1], len(train_features))
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    train_labels = train_labels.long()
    n_test = len(test)
    step = max(1, -(-n_test // max(1, int(chunks))))
    top5_n = min(5, num_classes)
    correct = {k: [0, 0] for k in ks}
    starts = range(0, n_test, step)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="k-NN", leave=False, dynamic_ncols=True, mininterval=1.0)
    for start in starts:
        sims = test[start:start + step] @ train.T
        top_sims, top_idx = sims.topk(kmax, dim=1, largest=True, sorted=True)
        neighbour_labels = train_labels[top_idx]
        weights = (top_sims / T).exp()
        targets = test_labels[start:start + step].long().view(-1, 1)
        for k in ks:
            kk = min(k, kmax)
            votes = torch.zeros(len(targets), num_classes)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            ranked = votes.argsort(dim=1, descending=True)
            hits = ranked[:, :top5_n].eq(targets)
            correct[k][0] += int(hits[:, 0].sum())
            correct[k][1] += int(hits.any(dim=1).sum())
    return {k: {"top1": 100.0 * c1 / n_test, "top5": 100.0 * c5 / n_test} for k, (c1, c5) in correct.items()}


def run(ctx) -> tuple[dict, str, dict]:
    """k-NN on ``eval.token`` (and on every block's token when ``knn.per_layer``), with the
    health (RankMe raw and centred, per-dimension std, pairwise cosine) of the test features of
    ``eval.token``: a k-NN number beside the rank of the features it was read from."""
    c = ctx.cfg.knn
    token = ctx.token
    names = [token] + ([f"{token}@{l}" for l in ctx.layers] if c.per_layer else [])
    train, val = ctx.features("train", names), ctx.features("val", names)
    metrics = {}
    for name in names:
        res = knn_classify(train[name], ctx.labels("train"), val[name], ctx.labels("val"), ctx.num_classes,
                           ks=list(c.k), T=float(c.T), chunks=int(c.chunks), progress=bool(ctx.cfg.progress))
        for k, acc in res.items():
            metrics[f"knn/{name}/k{k}/top1"] = acc["top1"]
            metrics[f"knn/{name}/k{k}/top5"] = acc["top5"]
    metrics.update({f"health/{token}/{k}": v for k, v in health_metrics(val[token]).items()})
    report_k = int(c.report_k)
    if report_k not in [int(k) for k in c.k]:
        raise ValueError(f"knn.report_k={report_k} is not in knn.k={list(c.k)}")
    return metrics, f"knn/{token}/k{report_k}/top1", {"feature": token, "T": float(c.T)}
