"""The method of the template paper: two augmented views, a predictor, a stop-gradient.

SimSiam's symmetric negative cosine (Chen & He, 2021) is the smallest loss that shows every
part of the method contract (`common.method.Method`, docs/CONTRACTS.md): the common loop calls
`build_train_data` and `build_method`, checks the returned module against the contract, then
calls its `training_step`, `after_step`, `param_groups`, `encoder_for_eval` and `export_meta`
(`common.method.MethodBase` gives the hooks a method without a teacher leaves alone).
`EXPORT_ENCODERS` lists what `method.export_encoder` may name. Replace the loss; keep the shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchvision.transforms import v2

from common import data as common_data
from common.config import encoder_arch
from common.method import MethodBase, input_meta_of
from common.optim import param_groups_weight_decay
from common.vit import ViT

EXPORT_ENCODERS = ("student",)  # method.export_encoder: one network, no teacher


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, z) averaged over the batch; no gradient flows into the target z."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class TwoViews:
    """Two independent crops + flips of one image, standardised with the data set's statistics."""

    def __init__(self, data: DictConfig, img_size: int, in_chans: int):
        self.view = v2.Compose([common_data.random_resized_crop(img_size, scale=tuple(data.aug.crop_scale)),
                                common_data.flip(0.5), common_data.normalize(data.stats, channels=in_chans)])

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(image), self.view(image)


class TwoViewCosine(MethodBase):
    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.encoder = ViT(**encoder_arch(cfg))  # the init scheme comes with the architecture
        dim, hidden = self.encoder.embed_dim, int(cfg.method.pred_hidden)
        self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.input_meta = input_meta_of(cfg)  # the size, channels and statistics encoder.pt records

    def training_step(self, batch, step: int) -> dict:
        (view1, view2), _ = batch
        z1, z2 = self.encoder(view1).prefix[:, 0], self.encoder(view2).prefix[:, 0]
        loss = (negative_cosine(self.predictor(z1), z2) + negative_cosine(self.predictor(z2), z1)) / 2
        return {"loss": loss, "z_std": F.normalize(z1.detach(), dim=-1).std(0).mean()}  # ~0 = collapse

    def after_step(self, step: int) -> None:
        """No EMA teacher or centre to update (a BYOL-like variant would update one here)."""

    def param_groups(self) -> list[dict]:
        return param_groups_weight_decay(self)

    def encoder_for_eval(self) -> ViT:
        return self.encoder

    def export_meta(self) -> dict:
        """What evaluation reads from encoder.pt: the default frozen feature and the input."""
        return {"feature": "cls", **self.input_meta}


def build_train_data(cfg: DictConfig):
    d = cfg.data
    images = common_data.get_dataset(d.name, "train", root=d.root, subset=d.train_subset, seed=int(cfg.train.seed))
    views = TwoViews(d, int(cfg.model.img_size), int(cfg.model.in_chans))
    return common_data.TransformedDataset(images, views), None  # None: torch's default collate


def build_method(cfg: DictConfig, total_steps: int) -> TwoViewCosine:
    return TwoViewCosine(cfg)
