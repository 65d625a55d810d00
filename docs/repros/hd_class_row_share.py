"""How much of a Hybrid Distill feature target k-NN can see (hybrid_distill/README.md, "Mini sweeps").

The feature loss (hybrid_distill/loss.py) compares per-token whitened teacher tokens, so every
row has unit energy per channel; k-NN only sees the part of the class row that changes from
image to image. For each encoder this prints, on a class-balanced 1k/1k Fashion-MNIST split
(bank from train, queries from test): k-NN (k=20, eval.knn) of the final class token, of its
whitened version (the loss target) and of the average-pooled patch tokens; the mean pairwise
cosine of the class token; the image-dependent share of the whitened class row and patch rows;
and the loss (smooth-L1, beta 2) of predicting every image's class row by the dataset mean,
alone and as its 1/(1+N) share of the Distill-X loss with method.cls_weight=1. A final Distill-X
loss near that share says nothing about whether the class token was copied.

    python docs/repros/hd_class_row_share.py runs/sdssl/mini/hd_teacher_mocov3/encoder.pt \
        runs/hybrid_distill/mini/distill_clip/encoder.pt ...
"""
import sys

import torch
import torch.nn.functional as F

from common.checkpoint import load_encoder
from common.data import get_dataset
from common.health import mean_pairwise_cosine
from eval.knn import knn_classify
from hybrid_distill.loss import whiten

torch.set_num_threads(1)
bank = get_dataset("fashion_mnist", "train", root="data", subset=1000, seed=0)
query = get_dataset("fashion_mnist", "test", root="data", subset=1000, seed=0)


@torch.no_grad()
def final_tokens(vit, meta, ds):
    x = ds.images.permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)
    return torch.cat([vit(x[i:i + 250]).tokens for i in range(0, len(x), 250)])


def knn(a, b):
    return knn_classify(a, bank.targets, b, query.targets, 10, ks=(20,))[20]["top1"]


for path in sys.argv[1:]:
    vit, meta, _ = load_encoder(path)
    vit.eval()
    a, b = final_tokens(vit, meta, bank), final_tokens(vit, meta, query)
    P = vit.num_prefix_tokens
    w = whiten(b)
    c, p = w[:, 0], w[:, P:]
    share_c = (c - c.mean(0)).pow(2).mean().item()
    share_p = (p - p.mean(0)).pow(2).mean().item()
    const = F.smooth_l1_loss(c.mean(0).expand_as(c), c, beta=2.0).item()
    print(f"{path}\n  k-NN cls {knn(a[:, 0], b[:, 0]):.1f}  whiten(cls) {knn(whiten(a[:, 0]), whiten(b[:, 0])):.1f}  "
          f"avgpool {knn(a[:, P:].mean(1), b[:, P:].mean(1)):.1f}  cos_mean(cls) {mean_pairwise_cosine(b[:, 0]):.4f}\n"
          f"  image-dependent share of the whitened class row {share_c:.3f}, of the patch rows {share_p:.3f}; "
          f"constant class row: loss {const:.5f} on its row, {const / (1 + p.shape[1]):.6f} of the total")
