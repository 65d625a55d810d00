"""Low-shot classification on frozen features with 1% / 10% of the training labels.

Splits are deterministic class-balanced fractions (``common.data.class_balanced_subset``,
seeded by ``eval.seed``), standing in for SimCLRv2's fixed ImageNet lists. Features are the
L2-normalised ``eval.token`` of the last block (UDI App. 8).

``logreg_full_batch`` reproduces iBOT/UDI's cyanure call: multinomial logistic regression
without intercept, objective ``mean CE + (lambda/N)/2 ||W||^2`` with ``lambda/N`` = cyanure's
``lambd / len(train)``. scikit-learn minimises ``C sum CE + 1/2 ||W||^2``; dividing by ``C N``
shows the two agree for ``C = 1 / lambda``. ``adamw`` trains a linear layer with weight decay
lambda (UDI App. 8's alternative).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from eval.heads import CachedBatches, HeadSpec, LinearHead, train_grid

SPLITS = {"1pct": 0.01, "10pct": 0.10}


def split_indices(targets: torch.Tensor, split: str, seed: int) -> torch.Tensor:
    from common.data import class_balanced_subset

    if split not in SPLITS:
        raise ValueError(f"lowshot split {split!r} unknown; use one of {sorted(SPLITS)}")
    return class_balanced_subset(targets, fraction=SPLITS[split], seed=seed)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, lam: float, max_iter: int = 1000) -> torch.Tensor:
    """Weights ``[C, d]`` of penalised multinomial logistic regression (C = 1/lambda, no intercept)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if lam <= 0:
        raise ValueError(f"lowshot.lambdas must be positive, got {lam}")
    clf = LogisticRegression(C=1.0 / lam, fit_intercept=False, max_iter=max_iter, tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x.double().numpy(), y.numpy())
    coef = torch.from_numpy(clf.coef_)
    if coef.shape[0] == 1:  # scikit-learn stores a binary problem as one row: logits (-w/2, w/2)
        coef = torch.cat([-coef / 2, coef / 2])
    classes = torch.from_numpy(clf.classes_).long()
    full = torch.zeros(int(y.max()) + 1, x.shape[1], dtype=torch.float64)
    full[classes] = coef
    return full


def logreg_accuracy(train_x, train_y, val_x, val_y, lam: float, max_iter: int = 1000) -> float:
    W = fit_logreg(train_x, train_y, lam, max_iter)
    pred = (val_x.double() @ W.T).argmax(dim=1)
    return 100.0 * float((pred == val_y).double().mean())


def run(ctx) -> tuple[dict, str, dict]:
    c = ctx.cfg.lowshot
    if c.solver not in ("logreg_full_batch", "adamw"):
        raise ValueError(f"lowshot.solver {c.solver!r} unknown; use logreg_full_batch or adamw")
    token = ctx.token
    train_x = F.normalize(ctx.features("train", [token])[token], dim=1)
    val_x = F.normalize(ctx.features("val", [token])[token], dim=1)
    train_y, val_y = ctx.labels("train"), ctx.labels("val")
    metrics, sizes = {}, {}
    for split in c.splits:
        idx = split_indices(train_y, split, int(ctx.cfg.seed))
        sizes[split] = len(idx)
        x, y = train_x[idx], train_y[idx]
        if c.solver == "logreg_full_batch":
            accs = {lam: logreg_accuracy(x, y, val_x, val_y, float(lam), int(c.max_iter)) for lam in c.lambdas}
        else:
            specs = [HeadSpec(f"lambda{lam:g}", token, float(c.lr), float(lam)) for lam in c.lambdas]
            torch.manual_seed(int(ctx.cfg.seed))
            heads = {s.name: LinearHead(x.shape[1], ctx.num_classes) for s in specs}
            res = train_grid(heads, specs, CachedBatches({token: x}, y, int(c.batch_size), int(ctx.cfg.seed)),
                             {token: val_x}, val_y, epochs=int(c.epochs), optimizer="adamw",
                             progress=bool(ctx.cfg.progress), desc=f"low-shot {split}",
                             max_steps=ctx.cfg.max_steps)
            accs = {lam: res[f"lambda{lam:g}"]["top1"] for lam in c.lambdas}
        for lam, acc in accs.items():
            metrics[f"lowshot/{split}/lambda{float(lam):g}/top1"] = acc
        metrics[f"lowshot/{split}/top1"] = max(accs.values())  # best lambda, as iBOT/UDI report
    headline = f"lowshot/{c.splits[0]}/top1"
    return metrics, headline, {"feature": token, "solver": c.solver, "labelled_images": sizes}
