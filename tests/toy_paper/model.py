"""A toy method for the foundation tests: MoCo-style InfoNCE with an EMA teacher.

Queries are local; teacher keys are gathered without gradient and student keys with
gradient, so the loss depends on every process and DDP equivalence is a real check.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from common import dist
from common.data import get_dataset
from common.ema import ema_update
from common.method import MethodBase
from common.optim import param_groups_weight_decay
from common.schedules import cosine_schedule
from common.vit import ViT


class ToyViews:
    """Two noisy, randomly shifted copies of an image (uses the loop-seeded global RNG)."""

    def __call__(self, sample):
        image, _ = sample
        x = image.float() / 16.0

        def view():
            shifted = torch.roll(x, shifts=(int(torch.randint(-1, 2, ())), int(torch.randint(-1, 2, ()))),
                                 dims=(1, 2))
            return shifted + 0.1 * torch.randn_like(shifted)

        return {"view1": view(), "view2": view()}


class MappedDataset(torch.utils.data.Dataset):
    def __init__(self, dataset, fn):
        self.dataset, self.fn = dataset, fn

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.fn(self.dataset[i])


def build_train_data(cfg):
    ds = get_dataset(cfg.data.name, "train", root=cfg.data.root, subset=cfg.data.train_subset, seed=0)
    return MappedDataset(ds, ToyViews()), None


EXPORT_ENCODERS = ("teacher",)


class ToyMethod(MethodBase):
    def __init__(self, cfg, total_steps: int):
        super().__init__()
        self.student = ViT(**cfg.model)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        d = self.student.embed_dim
        self.predictor = nn.Linear(d, d)
        self.temperature = float(cfg.method.temperature)
        self.m0, self.m1 = float(cfg.method.ema_momentum), float(cfg.method.ema_momentum_end)
        self.total_steps = total_steps
        self.nan_at_step = int(cfg.method.nan_at_step)
        self.inf_weight_at_step = int(cfg.method.inf_weight_at_step)
        self.sleep_s = float(cfg.method.sleep_s)

    def _cls(self, net, x):
        return net(x).prefix[:, 0]

    def training_step(self, batch, step):
        if self.sleep_s:
            time.sleep(self.sleep_s)  # lets the kill/preemption tests hit a run mid-epoch
        q = F.normalize(self.predictor(self._cls(self.student, batch["view1"])), dim=-1)
        z = F.normalize(self._cls(self.student, batch["view2"]), dim=-1)
        with torch.no_grad():
            k = F.normalize(self._cls(self.teacher, batch["view2"]), dim=-1)
        labels = torch.arange(q.shape[0]) + dist.rank() * q.shape[0]
        loss_teacher = F.cross_entropy(q @ dist.all_gather_nograd(k).T / self.temperature, labels)
        loss_student = F.cross_entropy(q @ dist.all_gather_with_grad(z).T / self.temperature, labels)
        loss = loss_teacher + loss_student
        if 0 <= self.nan_at_step <= step:
            loss = loss * float("nan")
        return {"loss": loss, "loss_teacher": loss_teacher.detach()}

    @torch.no_grad()
    def after_step(self, step):
        ema_update(self.teacher, self.student, cosine_schedule(step, self.total_steps, self.m0, self.m1, 0))
        if step == self.inf_weight_at_step:
            self.predictor.weight[0, 0] = float("inf")

    def param_groups(self):
        return param_groups_weight_decay(nn.ModuleDict({"s": self.student, "p": self.predictor}))

    def encoder_for_eval(self):
        return self.teacher

    def export_meta(self):
        return {"feature": "cls", "img_size": 8, "in_chans": 1, "mean": [0.0], "std": [1.0]}


def build_method(cfg, total_steps):
    return ToyMethod(cfg, total_steps)
