"""SimCLR, BYOL and MoCo v3 on the MoCo v3 ViT, with and without intermediate self-distillation.

One ``SDSSL`` module covers the six methods of the paper: ``method.framework`` picks the SSL
objective and ``method.intermediate_layers`` the distilled blocks (``[]`` is the baseline).

Per view ``v`` and block ``l``: ``h_l`` is the class token of block ``l`` after the shared
final LayerNorm, ``g_l`` its projector, ``p_l`` its predictor (MoCo v3, BYOL) and
``q_l = p_l(g_l(h_l))`` (SimCLR: ``q_l = g_l(h_l)``).  ``z`` is the teacher's final projection
(SimCLR: the student's own, see ``sdssl.loss.nt_xent``).  The objective (paper Eq. 6) is

    L = L_ssl(q_L, z) + alpha(t) * L_isd + beta * L_pred
    L_isd  = mean over distilled l < L of L_ssl(q_l, sg(z))
    L_pred = (n_pred if reduction == "sum" else 1) * mean over l of L_ssl(p_l(sg(g_l(h_l))), sg(z))

summed over the two (student view, teacher other view) pairings.  ``L_pred`` sees detached
projections and a no-grad target, so it trains the predictors only.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from torchvision.transforms import v2

from common import data as common_data
from common.ema import ema_update, momentum_schedule
from common.method import MethodBase, input_meta_of
from common.optim import param_groups_weight_decay
from common.vit import ViT
from sdssl.heads import StackedMLP
from sdssl.loss import alpha_at, byol_regression, moco_v3_contrastive, nt_xent

__all__ = ["SDSSL", "build_method", "build_train_data", "distilled_layers", "TwoViews"]

FRAMEWORKS = ("moco_v3", "byol", "simclr")
EXPORT_ENCODERS = ("teacher", "student")  # method.export_encoder; SimCLR has no teacher
INTER_HEADS = ("mlp3", "mlp2", "none")
PRED_REDUCTIONS = ("sum", "mean")


def distilled_layers(depth: int, intermediate_layers, every_n: int) -> list[int]:
    """Blocks below the last that get L_isd: ``intermediate_layers`` (null = all of 1..L-1),
    keeping every ``every_n``-th block.

    ``every_n`` implements the paper's "MLP/n" (Table 6): blocks n, 2n, ... below the last.
    """
    if every_n < 1:
        raise ValueError(f"method.every_n must be >= 1 (1 = every block), got {every_n}")
    if intermediate_layers is None:
        return [l for l in range(1, depth) if l % every_n == 0]
    layers = sorted({int(l) for l in intermediate_layers})
    bad = [l for l in layers if not 1 <= l < depth]
    if bad:
        raise ValueError(
            f"method.intermediate_layers {bad} outside 1..{depth - 1}: distilled blocks are 1-indexed and below the "
            f"last block ({depth}) of this depth-{depth} ViT; use null for all of them or [] for the baseline"
        )
    return [l for l in layers if l % every_n == 0]


class SDSSL(MethodBase):
    """A student ViT with per-block heads, an EMA teacher (MoCo v3, BYOL) and the SDSSL losses."""

    def __init__(
        self,
        backbone: ViT,
        framework: str,
        layers: list[int],
        total_steps: int,
        *,
        out_dim: int,
        proj_hidden_last: int,
        inter_proj_hidden: int,
        pred_hidden: int,
        inter_head: str,
        last_bn: bool,
        temperature: float,
        alpha_max: float,
        alpha_schedule: str,
        pred_loss_weight: float,
        pred_loss_reduction: str,
        shared_final_norm: bool,
        momentum_base: float,
        wd_exclude_1d: bool,
        predictor_lr_scale: float = 1.0,
        input_meta: dict | None = None,
        export_encoder: str | None = None,
    ) -> None:
        super().__init__()
        if framework not in FRAMEWORKS:
            raise ValueError(f"method.framework must be one of {FRAMEWORKS}, got {framework!r}")
        if inter_head not in INTER_HEADS:
            raise ValueError(f"method.inter_head must be one of {INTER_HEADS}, got {inter_head!r}")
        if pred_loss_reduction not in PRED_REDUCTIONS:
            raise ValueError(f"method.pred_loss_reduction must be one of {PRED_REDUCTIONS}, got {pred_loss_reduction!r}")
        check_export_encoder(export_encoder, framework)
        if alpha_max < 0:
            raise ValueError(f"method.alpha_max must be >= 0 (the weight of L_isd), got {alpha_max}")
        if pred_loss_weight < 0:
            raise ValueError(f"method.pred_loss_weight (beta) must be >= 0, got {pred_loss_weight}")
        if predictor_lr_scale <= 0:
            raise ValueError(f"method.predictor_lr_scale must be > 0 (1 = the paper's one lr), got {predictor_lr_scale}")
        if not 0.0 <= momentum_base <= 1.0:
            raise ValueError(f"method.momentum_base must lie in [0, 1], got {momentum_base}")
        bad = [l for l in layers if not 1 <= l < backbone.depth]
        if bad:
            raise ValueError(f"distilled layers {bad} outside 1..{backbone.depth - 1} of the depth-{backbone.depth} ViT")
        dim = backbone.embed_dim
        has_predictor = framework != "simclr"
        if framework == "simclr" and inter_head == "none" and layers and dim != out_dim:
            raise ValueError(
                f"SimCLR has no predictor, so method.inter_head=none compares the raw {dim}-d class token with the "
                f"{out_dim}-d final projection; set method.out_dim={dim} or use inter_head=mlp2/mlp3"
            )

        self.framework, self.layers, self.total_steps = framework, list(layers), int(total_steps)
        self.temperature, self.alpha_max, self.alpha_schedule = float(temperature), float(alpha_max), alpha_schedule
        self.pred_loss_weight, self.pred_loss_reduction = float(pred_loss_weight), pred_loss_reduction
        self.shared_final_norm, self.momentum_base = shared_final_norm, float(momentum_base)
        self.wd_exclude_1d, self.predictor_lr_scale = wd_exclude_1d, float(predictor_lr_scale)
        self.input_meta = dict(input_meta or {})  # img_size, in_chans, mean, std for encoder.pt
        # the teacher backbone (MoCo v3, BYOL) or the student (SimCLR), as the official code evaluates
        self.export_encoder = export_encoder or ("student" if framework == "simclr" else "teacher")

        self.student = backbone
        self.last_projector = StackedMLP(1, [dim, proj_hidden_last, proj_hidden_last, out_dim], last_bn)
        n_inter = len(self.layers)
        inter_dims = {"mlp3": [dim, inter_proj_hidden, inter_proj_hidden, out_dim],
                      "mlp2": [dim, inter_proj_hidden, out_dim]}
        self.inter_projectors = (
            StackedMLP(n_inter, inter_dims[inter_head], last_bn) if n_inter and inter_head != "none" else None
        )
        inter_out = out_dim if inter_head != "none" else dim
        self.last_predictor = StackedMLP(1, [out_dim, pred_hidden, out_dim], last_bn) if has_predictor else None
        self.inter_predictors = (
            StackedMLP(n_inter, [inter_out, pred_hidden, out_dim], last_bn) if has_predictor and n_inter else None
        )

        if framework == "simclr":
            self.teacher = None
            self.teacher_projector = None
        else:
            self.teacher = copy.deepcopy(backbone)
            self.teacher_projector = copy.deepcopy(self.last_projector)
            for p in [*self.teacher.parameters(), *self.teacher_projector.parameters()]:
                p.requires_grad = False

    # ------------------------------------------------------------------ forward pieces
    def _class_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[2B, n_inter + 1, D]``: class tokens of the distilled blocks and of the last block.

        With ``shared_final_norm`` every block goes through the final LayerNorm (paper §4.1);
        otherwise intermediate blocks give their raw residual stream.
        """
        out = self.student(x, layers=self.layers, norm_layers=self.shared_final_norm)
        cls = [out.hidden[l][:, 0] for l in self.layers] + [out.tokens[:, 0]]
        return torch.stack(cls, dim=1)

    def _project(self, h: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Projections of one view: intermediate ``[B, n_inter, d]`` (or None) and last ``[B, 1, d]``."""
        last = self.last_projector(h[:, -1:])
        if not self.layers:
            return None, last
        inter = self.inter_projectors(h[:, :-1]) if self.inter_projectors is not None else h[:, :-1]
        return inter, last

    def _predict(self, inter: torch.Tensor | None, last: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        inter_q = self.inter_predictors(inter) if inter is not None else None
        return inter_q, self.last_predictor(last)

    @torch.no_grad()
    def _teacher_targets(self, x: torch.Tensor, batch: int) -> list[torch.Tensor]:
        cls = self.teacher(x).tokens[:, :1]
        # One projector call per view: BatchNorm statistics are per view, as in the official code.
        return [self.teacher_projector(cls[i * batch:(i + 1) * batch])[:, 0] for i in range(2)]

    def alpha(self, step: int) -> float:
        return alpha_at(step, self.total_steps, self.alpha_max, self.alpha_schedule)

    def _pred_multiplier(self) -> float:
        return float(len(self.layers) + 1) if self.pred_loss_reduction == "sum" else 1.0

    # ------------------------------------------------------------------ losses
    def losses(self, batch, step: int) -> dict[str, torch.Tensor]:
        """The loss terms of one step: ``loss`` (the total), ``loss_ssl``, ``loss_isd``, ``loss_pred``."""
        (view1, view2), _ = batch
        batch_size = view1.shape[0]
        h = self._class_tokens(torch.cat([view1, view2]))
        # One head call per view: BatchNorm statistics are per view, as in the official code.
        projections = [self._project(h[i * batch_size:(i + 1) * batch_size]) for i in range(2)]
        zero = h.new_zeros(())
        if self.framework == "simclr":
            return self._simclr_losses(projections, step, zero)
        return self._teacher_losses(projections, torch.cat([view1, view2]), batch_size, step, zero)

    @staticmethod
    def _layer_major(x: torch.Tensor) -> torch.Tensor:
        """``[B, n, d] -> [n * B, d]`` with layer ``l``'s rows contiguous."""
        return x.transpose(0, 1).reshape(-1, x.shape[-1])

    def _ssl(self, queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.framework == "moco_v3":
            return moco_v3_contrastive(queries, targets, self.temperature)
        return byol_regression(queries, targets)

    def _teacher_losses(self, projections, x, batch_size, step, zero):
        targets = self._teacher_targets(x, batch_size)
        loss_ssl, loss_isd, loss_pred = zero, zero, zero
        for view in range(2):
            inter, last = projections[view]
            z = targets[1 - view]
            inter_q, last_q = self._predict(inter, last)
            loss_ssl = loss_ssl + self._ssl(last_q[:, 0], z)
            if inter_q is not None:
                loss_isd = loss_isd + self._ssl(self._layer_major(inter_q), z)
            if self.pred_loss_weight > 0:
                # L_pred: the predictors alone learn to map detached projections onto the target.
                inter_d, last_d = self._predict(inter.detach() if inter is not None else None, last.detach())
                stacked = last_d if inter_d is None else torch.cat([inter_d, last_d], dim=1)
                loss_pred = loss_pred + self._ssl(self._layer_major(stacked), z)
        loss_pred = self._pred_multiplier() * loss_pred
        alpha = self.alpha(step)
        total = loss_ssl + alpha * loss_isd + self.pred_loss_weight * loss_pred
        return {"loss": total, "loss_ssl": loss_ssl, "loss_isd": loss_isd, "loss_pred": loss_pred,
                "alpha": torch.tensor(alpha)}

    def _simclr_losses(self, projections, step, zero):
        finals = torch.cat([projections[0][1][:, 0], projections[1][1][:, 0]])  # [2B, d]: cat(view1, view2)
        loss_ssl = nt_xent(finals, finals, self.temperature, keys_require_grad=True)
        loss_isd = zero
        if self.layers:
            inter = torch.cat([projections[0][0], projections[1][0]])  # [2B, n_inter, d]
            loss_isd = nt_xent(self._layer_major(inter), finals, self.temperature, keys_require_grad=False)
        alpha = self.alpha(step)
        return {"loss": loss_ssl + alpha * loss_isd, "loss_ssl": loss_ssl, "loss_isd": loss_isd,
                "loss_pred": zero, "alpha": torch.tensor(alpha)}

    # ------------------------------------------------------------------ the loop's protocol
    def training_step(self, batch, step: int) -> dict:
        return self.losses(batch, step)

    def momentum(self, step: int) -> float:
        return momentum_schedule(step, self.total_steps, self.momentum_base)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if self.teacher is None:
            return
        m = self.momentum(step)
        ema_update(self.teacher, self.student, m)
        # The teacher's one projector follows the student's *last* projector only.
        ema_update(self.teacher_projector, self.last_projector, m)

    def predictors(self) -> list[nn.Module]:
        return [m for m in (self.last_predictor, self.inter_predictors) if m is not None]

    def trainable_modules(self) -> list[nn.Module]:
        return [m for m in (self.student, self.last_projector, self.inter_projectors) if m is not None] + self.predictors()

    def param_groups(self) -> list[dict]:
        # The predictors get their own lr: a faster predictor keeps BYOL out of its early partial
        # collapse (Tian et al. 2021, DirectPred); at 1.0 this is the paper's single lr.
        body = nn.ModuleList([m for m in self.trainable_modules() if all(m is not p for p in self.predictors())])
        groups = param_groups_weight_decay(body, exclude_1d=self.wd_exclude_1d)
        if self.predictors():
            groups += param_groups_weight_decay(nn.ModuleList(self.predictors()), exclude_1d=self.wd_exclude_1d,
                                                lr_scale=self.predictor_lr_scale)
        return groups

    def encoder_for_eval(self) -> ViT:
        return self.teacher if self.export_encoder == "teacher" else self.student

    def monitored_encoders(self) -> dict[str, ViT]:
        return {"student": self.student, **({"teacher": self.teacher} if self.teacher is not None else {})}

    def export_meta(self) -> dict:
        return dict(self.input_meta, feature="cls", framework=self.framework, distilled_layers=self.layers)


# ---------------------------------------------------------------------- data
class TwoViews:
    """The asymmetric two-view augmentation of MoCo v3 / BYOL (spec §5).

    View 1 always blurs; view 2 blurs with p=0.1 and solarizes with p=0.2.  For 1-channel
    sets the saturation/hue jitter and the random grayscale are dropped: they are the
    identity on gray images and torchvision's hue needs 3 channels.
    """

    def __init__(self, data_cfg: DictConfig, in_chans: int) -> None:
        size = int(data_cfg.img_size)
        aug = data_cfg.aug
        scale = tuple(aug.crop_scale)
        gray = in_chans == 1
        jitter = (aug.jitter[0], aug.jitter[1], 0.0, 0.0) if gray else tuple(aug.jitter)

        def view(blur_p: float, solarize_p: float) -> v2.Compose:
            steps = [common_data.random_resized_crop(size, scale=scale, interpolation=aug.interpolation),
                     common_data.color_jitter(*jitter, p=aug.jitter_p)]
            if not gray:
                steps.append(common_data.grayscale(aug.grayscale_p))
            steps.append(common_data.gaussian_blur(blur_p, size))
            if solarize_p > 0:
                steps.append(common_data.solarize(solarize_p))
            steps += [common_data.flip(0.5), common_data.normalize(data_cfg.stats, channels=in_chans)]
            return v2.Compose(steps)

        self.view1 = view(aug.blur_p[0], aug.solarize_p[0])
        self.view2 = view(aug.blur_p[1], aug.solarize_p[1])

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view1(image), self.view2(image)


def build_train_data(cfg: DictConfig):
    d = cfg.data
    dataset = common_data.get_dataset(d.name, "train", root=d.root, subset=d.train_subset, seed=int(cfg.train.seed))
    return common_data.TransformedDataset(dataset, TwoViews(d, int(cfg.model.in_chans))), None


# ---------------------------------------------------------------------- construction
def build_method(cfg: DictConfig, total_steps: int) -> SDSSL:
    m = cfg.method
    backbone = ViT(**OmegaConf.to_container(cfg.model, resolve=True))
    layers = distilled_layers(backbone.depth, m.intermediate_layers, int(m.every_n))
    return SDSSL(
        backbone, m.framework, layers, total_steps,
        out_dim=int(m.out_dim), proj_hidden_last=int(m.proj_hidden_last), inter_proj_hidden=int(m.inter_proj_hidden),
        pred_hidden=int(m.pred_hidden), inter_head=m.inter_head, last_bn=bool(m.last_bn),
        temperature=float(m.temperature), alpha_max=float(m.alpha_max), alpha_schedule=m.alpha_schedule,
        pred_loss_weight=float(m.pred_loss_weight), pred_loss_reduction=m.pred_loss_reduction,
        shared_final_norm=bool(m.shared_final_norm), momentum_base=float(m.momentum_base),
        wd_exclude_1d=bool(cfg.optim.wd_exclude_1d), predictor_lr_scale=float(m.predictor_lr_scale),
        input_meta=input_meta_of(cfg),
        export_encoder=m.export_encoder,
    )


def check_export_encoder(export_encoder: str | None, framework: str) -> None:
    if export_encoder == "teacher" and framework == "simclr":
        raise ValueError("method.export_encoder=teacher but SimCLR has no teacher; use method.export_encoder=student")


def validate_config(cfg: DictConfig) -> None:
    """The check common.validate runs at config time (the constructor checks the rest)."""
    check_export_encoder(cfg.method.export_encoder, cfg.method.framework)
