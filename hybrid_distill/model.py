"""Hybrid Distill (Shi et al., ICLR 2024): a symmetric student ViT distilled from a
supervised/contrastive teacher T_c (features of the last layer) and an MIM teacher T_m
(token relations of layers L-1 and L-2), on the tokens left by progressive redundant
token masking. The single-teacher baselines (Distill-DeiT / -MAE / -CLIP) and the
Table 3-7 target variants are the same method with another ``method.terms`` table.

One training step (spec Sec. 5):
1. the masking teacher (T_m) runs without gradient and yields the keep set and its targets;
2. every other teacher runs on the full image, its outputs gathered at [CLS] + kept;
3. the student runs on [CLS] + kept patches (no mask tokens, no decoder);
4. loss = sum over terms of weight * distance (feature: smooth-L1 to whitened teacher
   tokens through a linear head; relation: smooth-L1 between per-head relations).

Masks depend on the teacher's features, so unlike the other papers they are made here,
in the model, not in the collator; only the Table 8 random baseline comes from the collator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from common.augment import flip, random_resized_crop
from common.data import TransformedDataset, get_dataset
from common.method import MethodBase, input_meta_of
from common.optim import param_groups_weight_decay
from common.vit import ViT
from hybrid_distill.grid import check_grid_options, resample_token_map
from hybrid_distill.loss import TARGET_CENTERS, center_targets, feature_distance, relation_distance, whiten
from hybrid_distill.manifest import resolve_encoder_teacher
from hybrid_distill.masking import MaskPlan, gather_tokens, kept_counts, random_keep
from hybrid_distill.teachers import Capture, FrozenTeacher, load_teacher

TARGET_KINDS = ("feature", "relation", "msa")
EVAL_FEATURES = ("cls", "avgpool")  # the exported encoder's image feature (encoder meta `feature`)
TEACHER_FEATURES = ("post_norm", "block_out")
EXPORT_ENCODERS = ("student",)  # method.export_encoder: the teachers are fixed inputs, not trained


def resolve_layer(layer: int, depth: int) -> int:
    """Layer spec -> 1-indexed block: i > 0 is block i; 0 is the last block L, -1 is L-1, ...
    (so the paper's "L-2, L-1" is [-2, -1] whatever the depth of each network)."""
    block = int(layer) if layer > 0 else depth + int(layer)
    if not 1 <= block <= depth:
        raise ValueError(
            f"layer {layer} resolves to block {block}, outside 1..{depth} of a depth-{depth} network "
            "(positive = 1-indexed block, 0 = last block, -k = L-k)"
        )
    return block


@dataclass(frozen=True)
class Term:
    """One distillation target: ``kind`` of ``teacher`` at ``layers``, weighted by ``weight``."""

    name: str
    teacher: str
    kind: str
    layers: tuple[int, ...]
    weight: float

    def blocks(self, depth: int) -> tuple[int, ...]:
        """The 1-indexed blocks of a network of this depth (teacher and student resolve
        separately, so "L-1" means each network's own second-to-last block)."""
        return tuple(resolve_layer(layer, depth) for layer in self.layers)


def parse_terms(terms_cfg) -> list[Term]:
    terms = []
    for name, t in terms_cfg.items():
        if t is None:  # a term switched off from the command line: method.terms.x=null
            continue
        if t["kind"] not in TARGET_KINDS:
            raise ValueError(f"method.terms.{name}.kind={t['kind']!r}; choose one of {TARGET_KINDS}")
        layers = tuple(int(i) for i in t["layers"])
        if not layers:
            raise ValueError(f"method.terms.{name}.layers is empty")
        terms.append(Term(name, str(t["teacher"]), str(t["kind"]), layers, float(t["weight"])))
    if not terms:
        raise ValueError("method.terms has no distillation target")
    return terms


class HybridDistill(MethodBase):
    def __init__(self, student: ViT, teachers: dict[str, FrozenTeacher], terms: list[Term],
                 input_meta: dict, mask: dict, tc_feature: str = "post_norm", whiten_targets: bool = True,
                 feat_head: str = "linear", relation_form: str = "scaled", relation_include_cls: bool = True,
                 beta_feat: float = 2.0, beta_rel: float = 2.0, cls_weight: float = 1.0,
                 grid_align: str = "resize_input", grid_interp: str = "bilinear", eval_feature: str = "cls",
                 target_center: str = "none"):
        super().__init__()
        if target_center not in TARGET_CENTERS:
            raise ValueError(f"method.target_center={target_center!r}; choose one of {TARGET_CENTERS}")
        self.target_center = target_center
        check_grid_options(grid_align, grid_interp)
        if eval_feature not in EVAL_FEATURES:
            raise ValueError(f"method.eval_feature={eval_feature!r}; choose one of {EVAL_FEATURES}")
        if student.num_prefix_tokens != 1:
            raise ValueError("the student must have exactly one class token and no registers")
        if tc_feature not in TEACHER_FEATURES:
            raise ValueError(f"method.tc_feature={tc_feature!r}; choose one of {TEACHER_FEATURES}")
        self.student = student
        self.teachers = nn.ModuleDict(teachers)
        self.terms = terms
        self.input_meta = dict(input_meta)  # img_size, in_chans, mean, std for encoder.pt
        for name in ("mean", "std"):  # the student normalises the [0, 1] images itself, as each teacher does
            self.register_buffer(name, torch.tensor(input_meta[name], dtype=torch.float32).view(1, -1, 1, 1),
                                 persistent=False)
        self.tc_feature, self.whiten_targets = tc_feature, whiten_targets
        self.relation_form, self.relation_include_cls = relation_form, relation_include_cls
        self.beta_feat, self.beta_rel, self.cls_weight = beta_feat, beta_rel, cls_weight
        self.eval_feature = eval_feature
        self.grid_align, self.grid_interp = grid_align, grid_interp
        self.mask_teacher = mask.get("teacher", "tm")
        strategy = mask.get("strategy", "none")
        # Teachers whose token grid differs from the student's; grid_align says which side is resampled.
        self.off_grid = {name for name, t in teachers.items() if tuple(t.grid_size) != tuple(student.grid_size)}

        for term in terms:
            self._check_term(term, feat_head, strategy)
        # A linear head from student to teacher width per feature / MSA term (FD, dBOT); only
        # used during distillation, never exported.
        self.heads = nn.ModuleDict({
            term.name: self._make_head(student.embed_dim, self.teachers[term.teacher].embed_dim, feat_head)
            for term in terms if term.kind != "relation"
        })

        if strategy != "none" and self.mask_teacher not in self.teachers:
            raise ValueError(f"method.mask.teacher={self.mask_teacher!r} is not one of the teachers "
                             f"{sorted(self.teachers)}")
        if strategy != "none" and self.mask_teacher in self.off_grid:
            raise ValueError(f"method.mask.teacher={self.mask_teacher!r} has token grid "
                             f"{self.teachers[self.mask_teacher].grid_size}, the student "
                             f"{student.grid_size}: its keep indices would address another grid; use "
                             "method.grid_align=resize_input or a masking teacher with the student's patch size")
        depth = self.teachers[self.mask_teacher].depth if strategy != "none" else student.depth
        self.plan = MaskPlan(strategy, student.num_patches, depth, float(mask.get("K", 0.3)),
                             mask.get("layers"), mask.get("rounding", "round"),
                             reduce_tokens=mask.get("teacher_tokens", "reduced") == "reduced")

    # ---------------------------------------------------------------- construction checks
    def _check_term(self, term: Term, feat_head: str, mask_strategy: str) -> None:
        if term.teacher not in self.teachers:
            raise ValueError(f"method.terms.{term.name}.teacher={term.teacher!r}: no such teacher; "
                             f"configured: {sorted(self.teachers)}")
        teacher, student = self.teachers[term.teacher], self.student
        where = f"method.terms.{term.name} ({term.teacher} = {teacher.name})"
        if term.teacher in self.off_grid:
            self._check_grid_mismatch(term, where, mask_strategy)
        try:
            term.blocks(teacher.depth)
            term.blocks(student.depth)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if term.kind == "relation":
            if teacher.num_heads != student.num_heads:
                raise ValueError(
                    f"{where}: relation layers need the same number of heads, teacher has "
                    f"{teacher.num_heads} (width {teacher.embed_dim}), student {student.num_heads} "
                    f"(width {student.embed_dim}); set model.num_heads={teacher.num_heads}")
            if teacher.num_prefix_tokens != 1:
                raise ValueError(f"{where}: relations need a teacher with one class token, it has "
                                 f"{teacher.num_prefix_tokens} prefix tokens")
        elif feat_head == "identity" and teacher.embed_dim != student.embed_dim:
            raise ValueError(f"{where}: method.feat_head=identity needs teacher width {teacher.embed_dim} == "
                             f"student width {student.embed_dim}; use method.feat_head=linear")

    def _check_grid_mismatch(self, term: Term, where: str, mask_strategy: str) -> None:
        grids = (f"teacher token grid {self.teachers[term.teacher].grid_size} != student grid "
                 f"{self.student.grid_size}")
        if self.grid_align in ("resize_input", "none"):
            raise ValueError(f"{where}: {grids} (method.grid_align={self.grid_align}); set "
                             "method.grid_align=teacher_to_student or student_to_teacher to resample the token "
                             "map, or change the patch size (resize_input only resizes timm teachers)")
        if term.kind == "relation":
            raise ValueError(f"{where}: {grids}; relations (token x token) are not resampled, use "
                             "method.grid_align=resize_input")
        if self.grid_align == "student_to_teacher" and mask_strategy != "none":
            raise ValueError(f"{where}: {grids}; method.grid_align=student_to_teacher needs the student's "
                             f"whole token map, but method.mask.strategy={mask_strategy}; use "
                             "method.mask.strategy=none or method.grid_align=teacher_to_student")

    @staticmethod
    def _make_head(dim_in: int, dim_out: int, kind: str) -> nn.Module:
        if kind == "identity":
            return nn.Identity()
        if kind != "linear":
            raise ValueError(f"method.feat_head={kind!r}; choose linear or identity")
        head = nn.Linear(dim_in, dim_out)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        return head

    # ---------------------------------------------------------------- teachers stay out of checkpoints
    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "") + "teachers."
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]  # frozen and referenced by path + sha256; no need to copy them per step
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state = dict(state_dict)
        for key, value in super().state_dict().items():
            if key.startswith("teachers."):
                state.setdefault(key, value)
        return super().load_state_dict(state, strict=strict, assign=assign)

    # ---------------------------------------------------------------- forward
    def _captures(self) -> dict[str, Capture]:
        want: dict[str, dict[str, set]] = {name: {"hidden": set(), "relations": set(), "msa": set(), "final": set()}
                                           for name in self.teachers}
        for term in self.terms:
            teacher = self.teachers[term.teacher]
            for block in term.blocks(teacher.depth):
                if term.kind == "relation":
                    want[term.teacher]["relations"].add(block)
                elif term.kind == "msa":
                    want[term.teacher]["msa"].add(block)
                elif block == teacher.depth and self.tc_feature == "post_norm":
                    want[term.teacher]["final"].add(block)
                else:
                    want[term.teacher]["hidden"].add(block)
        return {name: Capture(tuple(sorted(w["hidden"])), tuple(sorted(w["relations"])),
                              tuple(sorted(w["msa"])), bool(w["final"])) for name, w in want.items()}

    def teacher_targets(self, images: torch.Tensor, keep: torch.Tensor | None):
        """Run the teachers (masking teacher first). Returns ({name: TeacherOutput}, keep)."""
        captures = self._captures()
        outputs = {}
        if self.plan.strategy != "none":
            out = self.teachers[self.mask_teacher](images, captures[self.mask_teacher], self.plan, keep)
            outputs[self.mask_teacher], keep = out, out.keep
        for name, teacher in self.teachers.items():
            if name in outputs:
                continue
            if name in self.off_grid and self.grid_align == "teacher_to_student":
                outputs[name] = self._on_student_grid(teacher(images, captures[name]), teacher, keep)
            else:
                outputs[name] = teacher(images, captures[name], None, keep)
        return outputs, keep

    def _on_student_grid(self, out, teacher: FrozenTeacher, keep: torch.Tensor | None):
        """A full-grid teacher output ([class token, all patches]) resampled to the student's
        grid, then gathered at [class token, kept patches] like the on-grid teachers."""
        def align(t: torch.Tensor) -> torch.Tensor:
            t = resample_token_map(t, teacher.grid_size, self.student.grid_size, 1, self.grid_interp)
            return t if keep is None else gather_tokens(t, keep, 1)

        out.hidden = {i: align(t) for i, t in out.hidden.items()}
        out.msa = {i: align(t) for i, t in out.msa.items()}
        out.final = None if out.final is None else align(out.final)
        out.keep = keep
        return out

    def _teacher_tensor(self, term: Term, out, block: int) -> torch.Tensor:
        if term.kind == "relation":
            return out.relations[block]
        if term.kind == "msa":
            return out.msa[block]
        if block == self.teachers[term.teacher].depth and self.tc_feature == "post_norm":
            return out.final
        return out.hidden[block]

    def _student_forward(self, images: torch.Tensor, keep: torch.Tensor | None):
        hidden, relations, msa_blocks = set(), set(), set()
        for term in self.terms:
            blocks = term.blocks(self.student.depth)
            {"feature": hidden, "relation": relations, "msa": msa_blocks}[term.kind].update(blocks)
        msa: dict[int, torch.Tensor] = {}
        # The attention branch output is the input of proj's successor: hook proj, which both
        # the fused and the relation-returning attention paths call.
        hooks = [self.student.blocks[b - 1].attn.proj.register_forward_hook(
            lambda _m, _i, o, b=b: msa.__setitem__(b, o)) for b in msa_blocks]
        try:
            out = self.student((images - self.mean) / self.std, keep=keep, layers=sorted(hidden),
                               norm_layers=True, relations=sorted(relations))
        finally:
            for h in hooks:
                h.remove()
        return out, msa

    def training_step(self, batch: dict, step: int) -> dict:
        images = batch["images"]
        targets, keep = self.teacher_targets(images, batch.get("keep"))
        out, msa = self._student_forward(images, keep)
        logs, weighted = {}, []
        for term in self.terms:
            teacher = self.teachers[term.teacher]
            pairs = zip(term.blocks(teacher.depth), term.blocks(self.student.depth))
            if term.kind == "relation":
                t_rel, s_rel = zip(*[(targets[term.teacher].relations[tb], out.relations[sb]) for tb, sb in pairs])
                loss = relation_distance(s_rel, t_rel, self.student.blocks[0].attn.head_dim, self.relation_form,
                                         self.beta_rel, self.relation_include_cls)
            else:
                losses = []
                for tb, sb in pairs:
                    target = self._teacher_tensor(term, targets[term.teacher], tb)
                    if self.whiten_targets:
                        target = whiten(target)
                    target = center_targets(target, self.target_center)
                    pred = self.heads[term.name](out.hidden[sb] if term.kind == "feature" else msa[sb])
                    if term.teacher in self.off_grid and self.grid_align == "student_to_teacher":
                        pred = resample_token_map(pred, self.student.grid_size, teacher.grid_size, 1,
                                                  self.grid_interp)
                    losses.append(feature_distance(pred, target, self.beta_feat, self.cls_weight))
                loss = torch.stack(losses).mean()
            logs[f"loss_{term.name}"] = loss.detach()
            weighted.append(term.weight * loss)
        # one sum of the terms, not a sum started from 0.0: under torch.compile a single term of
        # weight 1 would otherwise be the very tensor of its detached log and lose its grad_fn
        # (docs/repros/inductor_detached_log_drops_grad.py; same value in eager)
        logs["loss"] = torch.stack(weighted).sum()
        logs["kept_patches"] = float(keep.shape[1] if keep is not None else self.student.num_patches)
        return logs

    # ---------------------------------------------------------------- Method protocol
    def param_groups(self) -> list[dict]:
        no_decay = tuple(self.student.no_weight_decay())
        return param_groups_weight_decay(
            [(f"student.{n}", p) for n, p in self.student.named_parameters()] +
            [(f"heads.{n}", p) for n, p in self.heads.named_parameters()],
            no_decay_names=no_decay)

    def encoder_for_eval(self) -> ViT:
        return self.student

    def export_meta(self) -> dict:
        return {"feature": self.eval_feature, **self.input_meta, "mask_strategy": self.plan.strategy,
                "kept_patches": self.plan.final_count,
                "teachers": {name: t.describe() for name, t in self.teachers.items()}}


# ---------------------------------------------------------------------------- builders
def _container(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def used_teachers(cfg) -> list[str]:
    """Teachers referenced by a term or by the masking strategy (the others are not loaded)."""
    names = {t["teacher"] for t in _container(cfg.method.terms).values() if t is not None}
    if cfg.method.mask.strategy != "none":
        names.add(cfg.method.mask.teacher)
    return sorted(names)


def build_student(cfg) -> ViT:
    return ViT(**_container(cfg.model))


def build_method(cfg, total_steps: int) -> HybridDistill:
    student = build_student(cfg)
    teachers = {}
    for name in used_teachers(cfg):
        if name not in cfg.teachers:
            raise ValueError(f"teacher {name!r} is used by method.terms / method.mask but teachers.{name} "
                             f"is not configured; configured: {sorted(cfg.teachers)}")
        spec = _container(cfg.teachers[name])
        if spec.get("kind") == "encoder":
            spec = resolve_encoder_teacher(name, spec, cfg.scale_name, cfg.train.out_root, cfg.results_root)
        # resize_input: a timm teacher is built for the input size that gives the student's grid.
        align_by_input = cfg.method.grid_align == "resize_input"
        teachers[name] = load_teacher(spec, student.grid_size if align_by_input else None)
    m = cfg.method
    return HybridDistill(
        student, teachers, parse_terms(_container(m.terms)), input_meta_of(cfg), _container(m.mask),
        tc_feature=m.tc_feature, whiten_targets=m.whiten, feat_head=m.feat_head,
        relation_form=m.relation_form, relation_include_cls=m.relation_include_cls,
        beta_feat=m.beta_feat, beta_rel=m.beta_rel, cls_weight=m.cls_weight,
        grid_align=m.grid_align, grid_interp=m.grid_interp, eval_feature=m.eval_feature,
        target_center=m.target_center)


def build_method_for_cost(cfg, total_steps: int) -> HybridDistill:
    """`build_method` with the timm teachers at timm's random initialisation: common/cost.py
    counts a step's FLOPs from the architecture, before anyone has the weight files."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for spec in cfg.teachers.values():
        if spec.get("kind", "timm") == "timm":
            spec.random_weights = True
    return build_method(cfg, total_steps)


class DistillCollate:
    """Stacks images in [0, 1] (each network normalises them itself); for the random-masking
    baseline also draws the keep set, from the RNG the training loop seeds per batch."""

    def __init__(self, num_patches: int | None = None, num_keep: int | None = None):
        self.num_patches, self.num_keep = num_patches, num_keep

    def __call__(self, samples):
        images, _labels = default_collate(samples)
        batch = {"images": images}
        if self.num_keep is not None:
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            batch["keep"] = random_keep(len(images), self.num_patches, self.num_keep, gen)
        return batch


def build_train_data(cfg) -> tuple[Dataset, DistillCollate]:
    d = cfg.data
    dataset = get_dataset(d.name, "train", root=d.root, subset=d.train_subset, seed=int(cfg.train.seed))
    aug = d.aug
    steps = [random_resized_crop(int(d.img_size), scale=tuple(aug.crop_scale), interpolation=aug.interpolation)]
    if aug.flip_p:  # no flip step at all when off: the same random stream as without the key
        steps.append(flip(float(aug.flip_p)))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    collate = DistillCollate()
    mask = cfg.method.mask
    if mask.strategy == "random":
        num_patches = (int(d.img_size) // int(cfg.model.patch_size)) ** 2
        stages = len(mask.layers) if mask.layers is not None else 3
        collate = DistillCollate(num_patches, kept_counts(num_patches, float(mask.K), stages, mask.rounding)[-1])
    return TransformedDataset(dataset, v2.Compose(steps)), collate
