"""DINO and UDI as methods of the common training loop (``docs/CONTRACTS.md``).

One ``SelfDistillation`` module covers both:

* **DINO**: ``method.num_cls_tokens=1``, ``method.include_patch=false``: multi-crop
  self-distillation of the class token with an EMA teacher, centering and sharpening.
* **UDI**: two class tokens ``[cls, cls+]`` (each with its own position embedding), the SRS
  attention module over the raw last-block patch tokens, one shared DINO head, and the
  loss of ``udi.loss.UDILoss``.

Per step the student encodes the 2 global and ``n`` local crops (two backbone calls, one per
resolution); the teacher encodes the 2 globals **once** and answers all its SRS queries
(projections of the global and local samples) from that pass.  ``teacher_single_pass=false``
reproduces the official code, which runs the teacher backbone a second time for the local
queries (identical output, used by the benchmark).  The teacher's local patch logits are
reduced to per-(local, global) sums chunk by chunk, so the 65536-way logits of all local
samples never exist at once.

Two switches of the objective (``udi.loss``): ``method.local_patch_loss`` adds the student's
local SRS samples to the patch term (each against the teacher at its projections in both
globals); ``method.infonce_weight`` (lambda, Table 15) mixes SimCLR's InfoNCE between the two
global views into the objective, ``(1 - lambda) L + lambda L_InfoNCE``, on the student's
L2-normalised head bottleneck of the regular class token [inferred: the paper's Eq. 12 is lost].
"""
from __future__ import annotations

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from common.data import TransformedDataset, get_dataset
from common.ema import ema_update, momentum_schedule
from common.method import MethodBase, input_meta_of
from common.optim import param_groups_weight_decay
from common.vit import ViT
from udi.crops import OverlapMultiCrop, udi_photometric
from udi.heads import DINOHead, SRSAttention
from udi.loss import TeacherPatchLogits, UDILoss, check_alpha, info_nce
from udi.srs import check_window, srs_maps

__all__ = ["SelfDistillation", "MultiCropCollate", "build_method", "build_train_data", "teacher_temperature"]

HEAD_KINDS = ("cls", "cls_plus", "patch")
EXPORT_ENCODERS = ("teacher", "student")  # method.export_encoder; null = teacher (DINO's evaluated encoder)


def teacher_temperature(step: int, steps_per_epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """DINO's per-epoch schedule: ``linspace(warmup_temp, temp, warmup_epochs)[epoch]``, then ``temp``."""
    epoch = step // max(1, steps_per_epoch)
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


class Branch(nn.Module):
    """Backbone + (SRS module) + head(s): the student's and the teacher's share this layout,
    so the EMA matches parameters by name."""

    def __init__(self, backbone: ViT, srs: SRSAttention | None, heads: nn.ModuleList):
        super().__init__()
        self.backbone, self.srs, self.heads = backbone, srs, heads

    def head(self, kind: str) -> DINOHead:
        return self.heads[HEAD_KINDS.index(kind)] if len(self.heads) > 1 else self.heads[0]

    def encode(self, views: torch.Tensor, raw_patches: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final-normed class tokens ``[R, n_cls, D]`` and, if asked, the raw (pre-norm)
        last-block patch tokens ``[R, N, D]`` that feed the SRS module."""
        depth = self.backbone.depth
        out = self.backbone(views, layers=[depth] if raw_patches else None, norm_layers=False)
        patches = out.hidden[depth][:, self.backbone.num_prefix_tokens:] if raw_patches else None
        return out.class_tokens, patches


class SelfDistillation(MethodBase):
    def __init__(self, cfg: DictConfig, total_steps: int):
        super().__init__()
        m, crop = cfg.method, cfg.data.aug
        self.num_cls_tokens = int(m.num_cls_tokens)
        self.include_patch = bool(m.include_patch)
        if int(cfg.model.num_class_tokens) != self.num_cls_tokens:
            raise ValueError(f"model.num_class_tokens={cfg.model.num_class_tokens} differs from "
                             f"method.num_cls_tokens={m.num_cls_tokens}; set them equal")
        if int(crop.n_local) > 0 and not bool(cfg.model.dynamic_img_size):
            raise ValueError("local crops have another resolution than the globals: set model.dynamic_img_size=true")
        check_alpha(float(m.blend_alpha))
        self.local_patch = bool(m.local_patch_loss)
        self.infonce_weight, self.infonce_temp = float(m.infonce_weight), float(m.infonce_temp)
        if not 0.0 <= self.infonce_weight <= 1.0:
            raise ValueError(f"method.infonce_weight={m.infonce_weight} must lie in [0, 1] (0 = no InfoNCE, "
                             f"1 = InfoNCE only)")
        if self.infonce_temp <= 0:
            raise ValueError(f"method.infonce_temp={m.infonce_temp} must be > 0")
        self.total_steps = int(total_steps)
        self.steps_per_epoch = max(1, self.total_steps // int(cfg.train.epochs))
        self.m = OmegaConf.to_container(m, resolve=True)
        self.single_pass = bool(m.teacher_single_pass)
        self.chunk_rows = int(m.teacher_chunk_rows)
        self.export_encoder = m.export_encoder or "teacher"
        self.input_meta = input_meta_of(cfg, img_size=int(crop.global_size))

        self.student = self._branch(cfg, dict(OmegaConf.to_container(cfg.model, resolve=True)))
        teacher_arch = dict(self.student.backbone.arch, drop_path_rate=0.0)  # drop path: student only
        self.teacher = self._branch(cfg, teacher_arch)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.loss = UDILoss(int(m.out_dim), float(m.student_temp), float(m.center_momentum), float(m.blend_alpha),
                            self.num_cls_tokens, self.include_patch,
                            None if m.loss_weights is None else list(m.loss_weights), str(m.blend_space),
                            self.local_patch)

    def _branch(self, cfg: DictConfig, arch: dict) -> Branch:
        m = cfg.method
        backbone = ViT(**arch)
        if backbone.num_class_tokens == 2:
            # official init of both class tokens (timm uses std 1e-6)
            nn.init.trunc_normal_(backbone.cls_token, std=0.02)
        dim = backbone.embed_dim
        srs = SRSAttention(dim, backbone.num_heads, qkv_bias=bool(arch.get("qkv_bias", True)),
                           skip_connection=bool(m.srs_skip_connection)) if self.include_patch else None
        n_heads = len(HEAD_KINDS) if bool(m.decouple_head) else 1
        heads = nn.ModuleList([
            DINOHead(dim, int(m.out_dim), int(m.head_hidden_dim), int(m.head_bottleneck_dim), int(m.head_nlayers),
                     bool(m.norm_last_layer), bool(m.head_use_bn)) for _ in range(n_heads)])
        return Branch(backbone, srs, heads)

    # ------------------------------------------------------------------ schedules
    def teacher_temp(self, step: int) -> float:
        return teacher_temperature(step, self.steps_per_epoch, float(self.m["warmup_teacher_temp"]),
                                   float(self.m["teacher_temp"]), int(self.m["warmup_teacher_temp_epochs"]))

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _view_major(x: torch.Tensor) -> torch.Tensor:
        """``[B, V, ...]`` -> ``[V * B, ...]`` (row ``v * B + b``)."""
        return x.transpose(0, 1).flatten(0, 1)

    def _student(self, batch: dict) -> dict:
        s = self.student
        g = self._view_major(batch["global_crops"])
        B = batch["global_crops"].shape[0]
        cls_g, patches = s.encode(g, raw_patches=self.include_patch)
        cls_all = [cls_g]
        out = {}
        if "local_crops" in batch:
            local_patch = self.local_patch
            cls_l, patches_l = s.encode(self._view_major(batch["local_crops"]), raw_patches=local_patch)
            cls_all.append(cls_l)
            if local_patch:
                src = self._view_major(batch["local_src"]).unsqueeze(-1)  # [nB, Ml, 1]
                z = s.srs(patches_l, src, torch.ones_like(src, dtype=patches_l.dtype))
                out["patch_local"] = s.head("patch")(z).unflatten(0, (-1, B))  # [n, B, Ml, K]
        cls_all = torch.cat(cls_all)  # [(2 + n) B, n_cls, D]
        head = s.head("cls")
        embedding = head.bottleneck(cls_all[:, 0])
        out["cls"] = head.last_layer(embedding).unflatten(0, (-1, B))
        if self.infonce_weight > 0:
            out["cls_embedding"] = embedding[:2 * B].unflatten(0, (2, B))
        if self.num_cls_tokens == 2:
            out["cls_plus"] = s.head("cls_plus")(cls_all[:, 1]).unflatten(0, (-1, B))
        if self.include_patch:
            src = self._view_major(batch["global_src"]).unsqueeze(-1)  # [2B, Mg, 1] one-hot maps
            z = s.srs(patches, src, torch.ones_like(src, dtype=patches.dtype))
            out["patch"] = s.head("patch")(z).unflatten(0, (2, B))  # [2 (student view), B, Mg, K]
        return out

    def _local_sums(self, z: torch.Tensor, valid: torch.Tensor, teacher_temp: float,
                    fold: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per-row sums over the valid samples of the teacher head's logits (and, for the
        probability-space blend, of its centred sharpened probabilities), computed in chunks
        of about ``teacher_chunk_rows`` samples: ``z [R, M, D]`` -> ``[R, K]``.  With the local
        patch loss, also the per-sample sharpened probabilities of the valid samples summed
        over row blocks ``r`` and ``r + fold`` (the two teacher globals): ``[fold, M, K]``."""
        head = self.teacher.head("patch")
        rows_per_chunk = max(1, self.chunk_rows // z.shape[1])
        with_probs = self.loss.blend_space == "prob"
        sums, prob_sums = [], []
        targets = None
        start = 0
        for zc, vc in zip(z.split(rows_per_chunk), valid.split(rows_per_chunk)):
            logits, weight = head(zc), vc.unsqueeze(-1).to(zc.dtype)
            sums.append((logits * weight).sum(1))
            if with_probs or self.local_patch:
                probs = torch.softmax((logits - self.loss.centers["patch"]) / teacher_temp, dim=-1) * weight
            if with_probs:
                prob_sums.append(probs.sum(1))
            if self.local_patch:
                if targets is None:
                    targets = probs.new_zeros(fold, *probs.shape[1:])
                rows = torch.arange(start, start + zc.shape[0], device=zc.device) % fold
                targets.index_add_(0, rows, probs)
            start += zc.shape[0]
        return torch.cat(sums), torch.cat(prob_sums) if with_probs else None, targets

    @torch.no_grad()
    def _teacher(self, batch: dict, teacher_temp: float) -> tuple[torch.Tensor, TeacherPatchLogits | None]:
        t = self.teacher
        g = self._view_major(batch["global_crops"])
        B = batch["global_crops"].shape[0]
        cls_g, patches = t.encode(g, raw_patches=self.include_patch)
        teacher_cls = t.head("cls")(cls_g[:, 0]).unflatten(0, (2, B))
        if not self.include_patch:
            return teacher_cls, None
        # teacher view u answers the queries of student global 1 - u
        g_index = self._view_major(batch["global_tgt_index"].flip(1))  # [2B, Mg, 4]
        g_weight = self._view_major(batch["global_tgt_weight"].flip(1))
        Mg = g_index.shape[1]
        has_local = "local_tgt_index" in batch
        if has_local:
            n, Ml = batch["local_tgt_index"].shape[1], batch["local_tgt_index"].shape[3]
            # [B, n, 2, Ml, 4] -> teacher view u, rows u * B + b, queries (k, m)
            l_index = batch["local_tgt_index"].permute(2, 0, 1, 3, 4).flatten(2, 3).flatten(0, 1)
            l_weight = batch["local_tgt_weight"].permute(2, 0, 1, 3, 4).flatten(2, 3).flatten(0, 1)
        if has_local and self.single_pass:
            z = t.srs(patches, torch.cat([g_index, l_index], 1), torch.cat([g_weight, l_weight], 1))
            z_global, z_local = z[:, :Mg], z[:, Mg:]
        else:
            z_global = t.srs(patches, g_index, g_weight)
            if has_local:  # the official code's second teacher pass
                z_local = t.srs(t.encode(g, raw_patches=True)[1], l_index, l_weight)
        global_logits = t.head("patch")(z_global).unflatten(0, (2, B)).flip(0)  # -> student view order
        patch = TeacherPatchLogits(global_logits, batch["global_valid"].transpose(0, 1))
        if has_local:
            valid = batch["local_valid"].permute(2, 0, 1, 3)  # [2, B, n, Ml]
            sums, prob_sums, targets = self._local_sums(z_local.reshape(2 * B * n, Ml, -1),
                                                        valid.reshape(2 * B * n, Ml), teacher_temp, fold=B * n)
            patch.local_sum = sums.reshape(2, B, n, -1).permute(2, 0, 1, 3)  # [n, 2, B, K]
            if prob_sums is not None:
                patch.local_prob_sum = prob_sums.reshape(2, B, n, -1).permute(2, 0, 1, 3)
            patch.local_count = valid.sum(-1).permute(2, 0, 1).to(sums.dtype)  # [n, 2, B]
            if targets is not None:  # rows (b, k) -> [n, B, Ml, K]
                patch.local_targets = targets.reshape(B, n, Ml, -1).transpose(0, 1)
                patch.local_target_count = valid.sum(0).transpose(0, 1).to(sums.dtype)  # [n, B, Ml]
        return teacher_cls, patch

    def training_step(self, batch: dict, step: int) -> dict:
        tau = self.teacher_temp(step)
        student = self._student(batch)
        teacher_cls, teacher_patch = self._teacher(batch, tau)
        out = self.loss(student["cls"], teacher_cls, tau, student.get("cls_plus"), student.get("patch"), teacher_patch,
                        student.get("patch_local"))
        if self.infonce_weight > 0:
            contrastive = info_nce(*student["cls_embedding"], self.infonce_temp)
            out["loss_self_distillation"] = out["loss"].detach()
            out["loss_infonce"] = contrastive.detach()
            out["loss"] = (1 - self.infonce_weight) * out["loss"] + self.infonce_weight * contrastive
        out["teacher_temp"] = tau
        return out

    # ------------------------------------------------------------------ loop hooks
    def cancel_gradients(self, step: int) -> None:
        """DINO's ``freeze_last_layer``: no update of the heads' last layer in the first epochs."""
        if step // self.steps_per_epoch < int(self.m["freeze_last_layer"]):
            for head in self.student.heads:
                for p in head.last_layer.parameters():
                    p.grad = None

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        momentum = momentum_schedule(step, self.total_steps, float(self.m["momentum_teacher"]), 1.0)
        ema_update(self.teacher, self.student, momentum)
        self.loss.centers.update()

    def param_groups(self) -> list[dict]:
        """No weight decay on biases / 1-D parameters (DINO); ``patch_embed_lr_mult`` scales the
        patch projection's lr (the paper's MoCo v3-style lower rate, factor unknown)."""
        patch_embed = [(n, p) for n, p in self.student.named_parameters() if n.startswith("backbone.patch_embed.")]
        rest = [(n, p) for n, p in self.student.named_parameters() if not n.startswith("backbone.patch_embed.")]
        return (param_groups_weight_decay(rest)
                + param_groups_weight_decay(patch_embed, lr_scale=float(self.m["patch_embed_lr_mult"])))

    def encoder_for_eval(self) -> ViT:
        return (self.teacher if self.export_encoder == "teacher" else self.student).backbone

    def monitored_encoders(self) -> dict[str, ViT]:
        return {"student": self.student.backbone, "teacher": self.teacher.backbone}

    def export_meta(self) -> dict:
        tokens = ["cls", "cls_plus"][: self.num_cls_tokens]
        return {"feature": "cls", "class_tokens": tokens, "encoder": self.export_encoder, **self.input_meta}


# ---------------------------------------------------------------------- data
class MultiCropCollate:
    """Stacks the crops of a batch (batch dimension first) and builds its SRS maps."""

    def __init__(self, patch_size: int, global_size: int, local_size: int, window_global: int,
                 window_local: int, corner_placement: bool, with_maps: bool):
        self.global_grid, self.local_grid = global_size // patch_size, local_size // patch_size
        self.windows = (window_global, window_local)
        self.corner_placement, self.with_maps = corner_placement, with_maps
        if with_maps:
            check_window(self.global_grid, window_global, "global ")

    def __call__(self, items: list) -> dict:
        views = [sample for sample, _ in items]
        n_views = len(views[0]["crops"])
        batch = {
            "global_crops": torch.stack([torch.stack(v["crops"][:2]) for v in views]),
            "boxes": torch.stack([v["boxes"] for v in views]),
            "flips": torch.stack([v["flips"] for v in views]),
            "image_hw": torch.stack([v["image_hw"] for v in views]),
        }
        if n_views > 2:
            batch["local_crops"] = torch.stack([torch.stack(v["crops"][2:]) for v in views])
        if self.with_maps:
            batch.update(srs_maps(batch["boxes"], batch["flips"], batch["image_hw"], self.global_grid,
                                  self.local_grid, *self.windows, self.corner_placement))
        return batch


def build_transform(cfg: DictConfig) -> OverlapMultiCrop:
    c = cfg.data.aug
    photometric = udi_photometric(int(c.global_size), tuple(c.jitter), float(c.jitter_p), float(c.grayscale_p),
                                  stats=str(cfg.data.stats), channels=int(cfg.model.in_chans))
    transform = OverlapMultiCrop(int(c.global_size), int(c.local_size), int(c.n_local), int(cfg.model.patch_size),
                                 tuple(c.global_scale), tuple(c.local_scale), flip_p=float(c.flip_p),
                                 overlap_mode=str(c.overlap_mode), local_ref=str(c.local_ref), transform=photometric)
    if bool(cfg.method.include_patch) and int(c.n_local):
        check_window(int(c.local_size) // int(cfg.model.patch_size), int(cfg.method.window_local), "local ")
    return transform


def build_train_data(cfg: DictConfig):
    dataset = get_dataset(cfg.data.name, "train", root=cfg.data.root, subset=cfg.data.train_subset, seed=0)
    c = cfg.data.aug
    collate = MultiCropCollate(int(cfg.model.patch_size), int(c.global_size), int(c.local_size),
                               int(cfg.method.window_global), int(cfg.method.window_local),
                               bool(cfg.method.corner_placement), with_maps=bool(cfg.method.include_patch))
    return TransformedDataset(dataset, build_transform(cfg)), collate


def build_method(cfg: DictConfig, total_steps: int) -> SelfDistillation:
    return SelfDistillation(cfg, total_steps)
