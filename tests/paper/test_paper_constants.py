"""The constants of each paper's main-table runs, resolved as `python <paper>/launch.py
experiment=<table> scale=paper` resolves them (common.launch.plan_runs, no training), pinned
to the values the paper or the official/reference code states. A config refactor that moves
one of them fails here with the key, the run and the source of the expected value.

Sources (one tag per value, see the tables below):
  [ijepa]   facebookresearch/ijepa: configs/in1k_vit*.yaml, src/transforms.py, src/masks/multiblock.py
  [ijepa-p] the I-JEPA paper (Assran et al. 2023): predictor depth, epochs of ViT-B/L
  [mae]     facebookresearch/mae: main_pretrain.py, models_mae.py, main_linprobe.py
  [vjepa]   facebookresearch/jepa: the attentive probe (eval.md sec. 4; wd is V-JEPA's paper value)
  [dino]    facebookresearch/dino: eval_knn.py (T = 0.07, k = 20)
  [crossmae] TonyLianLong/CrossMAE README;  [d2v2] facebookresearch/fairseq examples/data2vec (v2 image config)
  [sdssl-p] SDSSL paper sec. 4.1 / 4.2;  [sdssl] hagiss/SDSSL SD_*.json, baseline_*.json, pl_train_*.py, multi_exit.py
  [mocov3]  facebookresearch/moco-v3 vits.py (ViT-S with 12 heads), main_moco.py
  [hd-p]    Hybrid Distill paper sec. 4.1 / 4.2 / App. C / Eq. 3;  [dbot] liuxingbin/dbot run.sh, DOWNSTREAM.md
  [udi-p]   UDI paper sec. 4.1 / App. 8;  [udi] ISL-CV/udi argparse defaults and README command
  [inf]     inferred where no source states the value (the paper README gives the reason)
"""
from __future__ import annotations

from functools import lru_cache

import pytest
from omegaconf import OmegaConf

from common.launch import plan_runs
from eval import settings


@lru_cache(maxsize=None)
def runs_of(paper: str, experiment: str) -> dict:
    return {spec.name: spec.cfg for spec in plan_runs(paper, [f"experiment={experiment}", "scale=paper"])}


def value(cfg, key: str):
    """``eval:<key>`` reads the eval block as eval.api resolves it (recipe files included)."""
    node = settings.resolve(cfg.eval) if key.startswith("eval:") else cfg
    found = OmegaConf.select(node, key.removeprefix("eval:"), throw_on_missing=True)
    return OmegaConf.to_container(found, resolve=True) if OmegaConf.is_config(found) else found


# ------------------------------------------------------------------ Bootleg: main_table (S/16 rows; B/16, L/16)
IJEPA_RECIPE = {
    "model.embed_dim": 384, "model.depth": 12, "model.num_heads": 6, "model.patch_size": 16,  # [ijepa] vit_small
    "model.img_size": 224, "model.num_class_tokens": 0, "model.pos_embed": "sincos",  # [ijepa] no CLS, frozen sincos
    "model.norm_eps": 1e-6,  # [ijepa]
    "data.batch_size": 2048,  # [ijepa] 128 per GPU x 16
    "data.aug.crop_scale": [0.3, 1.0], "data.aug.flip_p": 0.0, "data.aug.interpolation": "bilinear",  # [ijepa] transforms
    "optim.name": "adamw", "optim.betas": [0.9, 0.999],  # [ijepa] torch AdamW defaults
    "optim.lr": 1e-3, "optim.ref_batch": 2048, "optim.start_lr": 2e-4, "optim.min_lr": 1e-6,  # [ijepa]
    "optim.warmup_epochs": 40, "optim.schedule": "ijepa",  # [ijepa] WarmupCosineSchedule
    "optim.weight_decay": 0.04, "optim.weight_decay_end": 0.4, "optim.clip_grad": 0.0,  # [ijepa]
    "train.epochs": 600,  # [ijepa-p] ViT-B/L; Bootleg's own epochs are not in our text [inf]
    "train.precision": "bf16",  # [ijepa]
    "method.ema": [0.996, 1.0],  # [ijepa] linear momentum ramp
    "mask.npred": 4, "mask.pred_scale": [0.15, 0.2], "mask.aspect": [0.75, 1.5],  # [ijepa] multiblock config
    "mask.enc_scale": [0.85, 1.0], "mask.min_keep": 10, "mask.allow_overlap": False,  # [ijepa]
    "predictor.width": 384, "predictor.depth": 6,  # [ijepa] pred_emb_dim 384; [ijepa-p] depth 6 for B (S: [inf])
    "method.export_encoder": "teacher",  # [ijepa] target_encoder is evaluated
    # frozen probes: V-JEPA attentive probe, MAE avg-pool + BN linear probe, DINO k-NN
    "eval:attn_probe.kind": "vjepa", "eval:attn_probe.epochs": 20, "eval:attn_probe.lr": 1e-3,  # [vjepa]
    "eval:attn_probe.wd": 0.01, "eval:attn_probe.batch_size": 1024, "eval:attn_probe.aug": "autoaug",  # [vjepa]
    "eval:linear.protocol": "mae_bn", "eval:linear.bn": True, "eval:linear.optimizer": "lars",  # [mae]
    "eval:linear.lr": 0.1, "eval:linear.batch_size": 16384, "eval:linear.epochs": 90,  # [mae] main_linprobe
    "eval:linear.warmup_epochs": 10, "eval:linear.weight_decay": 0.0,  # [mae]
    "eval:knn.T": 0.07, "eval:knn.report_k": 20,  # [dino]
}
MAE_RECIPE = {
    "model.embed_dim": 384, "model.depth": 12, "model.num_heads": 6, "model.patch_size": 16,
    "data.batch_size": 4096, "data.aug.crop_scale": [0.2, 1.0], "data.aug.flip_p": 0.5,  # [mae] main_pretrain
    "data.aug.interpolation": "bicubic",  # [mae] RandomResizedCrop(interpolation=3)
    "optim.lr": 1.5e-4, "optim.ref_batch": 256, "optim.betas": [0.9, 0.95], "optim.min_lr": 0.0,  # [mae]
    "optim.warmup_epochs": 40, "optim.weight_decay": 0.05, "optim.weight_decay_end": 0.05,  # [mae]
    "optim.schedule": "cosine", "train.epochs": 1600,  # [mae]; the I-JEPA paper's MAE rows are 1600 epochs
    "mask.mask_ratio": 0.75, "method.norm_pix_loss": True,  # [mae]
    "predictor.width": 512, "predictor.depth": 8, "predictor.num_heads": 16,  # [mae] decoder
    "method.export_encoder": "student", "eval:linear.protocol": "mae_bn",
}
IJEPA_TARGETS = {"method.target_layers": ["final"], "method.loss": "smooth_l1",  # [ijepa] train.py
                 "method.smooth_l1_beta": 1.0}
BOOTLEG_TARGETS = {"method.target_layers": ["even:4"],  # [inf] 4 evenly spaced blocks
                   "method.loss": "mse", "method.target_norm": "layer", "mask.generator": "bootleg"}  # [inf]
# the B/16 and L/16 rows (the abstract's scale claims): the S/16 recipe with the model dimensions
# and what the sources state per size; everything else (batch, lr, schedule, masks, probes) is size-free
IJEPA_B16 = {"model.embed_dim": 768, "model.depth": 12, "model.num_heads": 12,  # [ijepa] vit_base
             "predictor.depth": 6, "train.epochs": 600}  # [ijepa-p] ViT-B: predictor depth 6, 600 epochs
IJEPA_L16 = {"model.embed_dim": 1024, "model.depth": 24, "model.num_heads": 16,  # [ijepa] vit_large
             "predictor.depth": 12, "train.epochs": 600}  # [ijepa-p] ViT-L/H predictor depth 12; ViT-L 600 epochs
MAE_B16 = {"model.embed_dim": 768, "model.depth": 12, "model.num_heads": 12}  # [mae] mae_vit_base_patch16 (dec512d8b)
MAE_L16 = {"model.embed_dim": 1024, "model.depth": 24, "model.num_heads": 16}  # [mae] mae_vit_large_patch16 (dec512d8b)
BOOTLEG = {
    "s16-ijepa": {**IJEPA_RECIPE, **IJEPA_TARGETS},
    "s16-bootleg": {**IJEPA_RECIPE, **BOOTLEG_TARGETS},
    "s16-mae": MAE_RECIPE,
    # [crossmae] TonyLianLong/CrossMAE README: MAE recipe, 800 epochs (released), decoder 12 x 256 / 8 heads
    "s16-crossmae": {**MAE_RECIPE, "train.epochs": 800, "predictor.width": 256, "predictor.depth": 12,
                     "predictor.num_heads": 8, "mask.predict_ratio": 0.25},
    # [d2v2] fairseq data2vec 2.0 base_images_only_task.yaml: 16 x 16 images, 16 clones, lr 1e-3,
    # 10 warm-up epochs, clip 4, 75 epochs (375300 updates), mask 0.8, top-10 targets
    "s16-data2vec": {"data.batch_size": 256, "mask.clones": 16, "optim.lr": 1e-3, "optim.warmup_epochs": 10,
                     "optim.clip_grad": 4.0, "train.epochs": 75, "mask.mask_ratio": 0.8,
                     "method.target_layers": ["top:10"]},
    "b16-mae": {**MAE_RECIPE, **MAE_B16},  # [mae] one pretraining recipe for B/L (1600 epochs, batch 4096)
    "b16-ijepa": {**IJEPA_RECIPE, **IJEPA_TARGETS, **IJEPA_B16},
    "b16-bootleg": {**IJEPA_RECIPE, **BOOTLEG_TARGETS, **IJEPA_B16},
    "l16-mae": {**MAE_RECIPE, **MAE_L16},
    "l16-ijepa": {**IJEPA_RECIPE, **IJEPA_TARGETS, **IJEPA_L16},
    "l16-bootleg": {**IJEPA_RECIPE, **BOOTLEG_TARGETS, **IJEPA_L16},  # even:4 = blocks 6, 12, 18, 24 [inf]
}

# ------------------------------------------------------------------ SDSSL: Table 1
SDSSL_COMMON = {
    "model.img_size": 224, "model.freeze_patch_embed": True, "model.pos_embed": "sincos",  # [sdssl-p] [mocov3]
    "model.drop_path_rate": 0.0, "model.num_class_tokens": 1,  # [sdssl]
    "optim.name": "adamw", "optim.betas": [0.9, 0.999], "optim.ref_batch": 256,  # [sdssl]
    "optim.warmup_epochs": 40, "optim.min_lr": 0.0, "optim.schedule": "cosine",  # [sdssl-p] [sdssl]
    "optim.weight_decay": 0.1, "optim.weight_decay_end": 0.1, "optim.clip_grad": 0.0,  # [sdssl-p] constant wd
    "optim.wd_exclude_1d": True, "train.epochs": 300, "train.precision": "fp32",  # [sdssl]
    "data.aug.crop_scale": [0.08, 1.0], "data.aug.interpolation": "bilinear",  # [sdssl] [mocov3] main_moco
    "data.aug.jitter": [0.4, 0.4, 0.2, 0.1], "data.aug.jitter_p": 0.8, "data.aug.grayscale_p": 0.2,  # [mocov3]
    "data.aug.blur_p": [1.0, 0.1], "data.aug.solarize_p": [0.0, 0.2],  # [mocov3] asymmetric views
    "method.out_dim": 256, "method.proj_hidden_last": 4096, "method.inter_proj_hidden": 2048,  # [sdssl] heads
    "method.pred_hidden": 4096, "method.alpha_schedule": "cosine",  # [sdssl] [sdssl-p]
    "eval.val_resize": "square256",  # [sdssl] Resize((256, 256))
    "eval:linear.protocol": "sdssl_multiexit", "eval:linear.per_layer": True,  # [sdssl] multi_exit.py
    "eval:linear.lr": 0.002, "eval:linear.batch_size": 8192, "eval:linear.epochs": 100,  # [sdssl] 2048/GPU x 4 [inf]
    "eval:linear.optimizer": "sgd", "eval:linear.momentum": 0.9, "eval:linear.weight_decay": 0.0,  # [sdssl]
    "eval:knn.T": 0.07, "eval:knn.report_k": 20,  # [dino] (SDSSL's k-NN protocol)
}
VIT_S16 = {"model.embed_dim": 384, "model.depth": 12, "model.num_heads": 12, "model.patch_size": 16}  # [mocov3]
SDSSL_ARCH = {  # model, and the batch the paper states per model [sdssl-p] sec. 4.1 / 4.2
    "s32": {**VIT_S16, "model.patch_size": 32, "data.batch_size": 4096},
    "s16": {**VIT_S16, "data.batch_size": 1024},
    "b16": {"model.embed_dim": 768, "model.depth": 12, "model.num_heads": 12, "model.patch_size": 16,  # [sdssl] vit_base
            "data.batch_size": 1024},
}
SDSSL_BASELINE = {"method.intermediate_layers": [], "method.pred_loss_weight": 0.0}  # [sdssl] baseline_*.json: ratio 0
SDSSL_SD = {"method.intermediate_layers": None, "method.every_n": 1,  # [sdssl-p] every block 1..L-1 (null = all)
            "method.pred_loss_weight": 1.0}  # [sdssl-p] beta = 1 (frameworks with a predictor)
SDSSL_METHOD = {  # lr = base lr x batch / 256
    "moco_v3": {**SDSSL_BASELINE, "method.framework": "moco_v3", "optim.lr": 1.5e-4,  # [sdssl] baseline_moco.json
                "method.temperature": 0.2, "method.last_bn": True, "method.momentum_base": 0.996},  # [sdssl]
    "sd_moco_v3": {**SDSSL_SD, "method.framework": "moco_v3", "optim.lr": 1.5e-4,  # [sdssl-p]
                   "method.alpha_max": 1.0, "method.temperature": 0.2, "method.last_bn": True,  # [sdssl] SD_moco.json
                   "method.momentum_base": 0.996},  # [sdssl]
    "byol": {**SDSSL_BASELINE, "method.framework": "byol", "optim.lr": 1.5e-4,  # [sdssl] baseline_byol.json
             "method.last_bn": False, "method.momentum_base": 0.996},  # [sdssl-p] no BN on BYOL outputs; [sdssl]
    "sd_byol": {**SDSSL_SD, "method.framework": "byol", "optim.lr": 1.5e-4,  # [sdssl-p]
                "method.alpha_max": 0.8, "method.last_bn": False, "method.momentum_base": 0.996},  # [sdssl] SD_byol.json
    "simclr": {**SDSSL_BASELINE, "method.framework": "simclr", "optim.lr": 1.3e-4,  # [sdssl] baseline_simclr.json
               "method.temperature": 0.2, "method.last_bn": True},  # [sdssl]
    "sd_simclr": {**SDSSL_SD, "method.framework": "simclr", "optim.lr": 1.3e-4,  # [sdssl] SD_simclr.json
                  "method.pred_loss_weight": 0.0,  # [sdssl-p] SimCLR has no predictor, no L_pred
                  "method.alpha_max": 0.8, "method.temperature": 0.2, "method.last_bn": True},  # [sdssl]
}
SDSSL = {f"table1-{arch}-{method}": {**SDSSL_COMMON, **SDSSL_ARCH[arch], **SDSSL_METHOD[method]}
         for arch in SDSSL_ARCH for method in SDSSL_METHOD}

# ------------------------------------------------------------------ Hybrid Distill: Table 1
HD_COMMON = {  # the sec. 4.1 recipe of every Table 1 row, the 300-epoch Distill-X baselines included [hd-p]
    "model.img_size": 224, "model.patch_size": 16, "model.pos_embed": "sincos",  # [hd-p] 224 px; sincos [inf]
    "data.batch_size": 1024, "optim.lr": 1.5e-4, "optim.ref_batch": 256,  # [hd-p] 6e-4 at 1024
    "optim.weight_decay": 0.05, "optim.weight_decay_end": 0.05, "optim.name": "adamw",  # [hd-p]
    "optim.schedule": "cosine", "optim.betas": [0.9, 0.95], "optim.min_lr": 0.0,  # [hd-p] cosine; [dbot]
    "data.aug.crop_scale": [0.2, 1.0], "data.aug.interpolation": "bicubic", "data.aug.flip_p": 0.5,  # [dbot]
    "method.beta_feat": 2.0,  # [dbot] smooth-L1 beta of the feature term
    "eval:finetune.batch_size": 256, "eval:finetune.lr": 3e-4, "eval:finetune.weight_decay": 0.05,  # [hd-p] App. C
    "eval:finetune.warmup_epochs": 5, "eval:finetune.min_lr": 1e-6, "eval:finetune.label_smoothing": 0.1,  # [dbot]
    "eval:finetune.mixup": 0.8, "eval:finetune.cutmix": 1.0, "eval:finetune.reprob": 0.25,  # [dbot]
    "eval:finetune.global_pool": "avg", "eval:finetune.aug": "randaug",  # [dbot]
}
HD_HYBRID = {
    "method.name": "hybrid_distill", "method.alpha": 1.0,  # [hd-p]
    "method.terms.tc_feature.layers": [0], "method.terms.tm_relation.layers": [-2, -1],  # [hd-p] Eq. 3
    "method.terms.tm_relation.kind": "relation", "method.terms.tm_relation.teacher": "mae",  # [hd-p] R of T_m = MAE
    "method.mask.strategy": "progressive", "method.mask.K": 0.3, "method.mask.layers": None,  # [hd-p] I = [0, L/3, 2L/3]
    "method.tm": "mae",  # [hd-p]
}
HD_DISTILL = {  # "Distill-X": 300-epoch single-teacher symmetric baselines [hd-p] sec. 4.2
    "method.name": "distill", "method.terms.feature.kind": "feature",  # [hd-p] features of one teacher
    "method.terms.feature.layers": [0],  # [hd-p] Eq. 3: the last layer, as T_c in Hybrid Distill
    "method.mask.strategy": "none",  # [inf] the mask comes from the MIM teacher a single-teacher run lacks
}
HD_VIT_B = {"model.embed_dim": 768, "model.depth": 12, "model.num_heads": 12,  # [hd-p] ViT-B/16 student
            "train.epochs": 300, "optim.warmup_epochs": 40,  # [hd-p] 300 epochs; [dbot] warm-up
            "data.name": "imagefolder:data/imagenet",  # [hd-p] ViT-B distils on IN-1K
            "eval:finetune.recipe": "dbot", "eval:finetune.epochs": 100,  # [dbot] ViT-B
            "eval:finetune.layer_decay": 0.65, "eval:finetune.drop_path": 0.1,  # [dbot] ViT-B
            "eval:finetune.clip_grad": 0.0}
HD_VIT_L = {"model.embed_dim": 1024, "model.depth": 24, "model.num_heads": 16,
            "train.epochs": 40, "data.name": "imagefolder:data/imagenet21k",  # [hd-p] IN-21K, 40 ep
            "optim.warmup_epochs": 5,  # [inf] dBOT's 40 would be the whole run
            "teachers.clip.name": "vit_large_patch14_clip_quickgelu_224.openai",  # [hd-p] CLIP-L
            "teachers.mae.name": "vit_large_patch16_224.mae",  # [hd-p] MAE-L
            "eval:finetune.recipe": "dbot_large", "eval:finetune.epochs": 50,  # [dbot] ViT-L/16
            "eval:finetune.layer_decay": 0.75, "eval:finetune.drop_path": 0.25,  # [dbot] ViT-L/16
            "eval:finetune.clip_grad": 1.0}  # [dbot] ViT-L/16
HD_TEACHER_B = {"deit": "deit_base_patch16_224.fb_in1k",  # [hd-p] DeiT-B/16 (star rows)
                "clip": "vit_base_patch16_clip_quickgelu_224.openai",  # [hd-p] CLIP-B/16 (dagger rows)
                "mae": "vit_base_patch16_224.mae"}  # [hd-p] MAE-B/16


def hd_teacher(tc: str) -> dict:
    return {"method.tc": tc, f"teachers.{tc}.name": HD_TEACHER_B[tc]}


HYBRID = {
    **{f"b300_distill_{tc}": {**HD_COMMON, **HD_DISTILL, **HD_VIT_B, **hd_teacher(tc),
                              "method.terms.feature.teacher": tc} for tc in ("deit", "mae", "clip")},
    **{f"b300_hybrid_{tc}": {**HD_COMMON, **HD_HYBRID, **HD_VIT_B, **hd_teacher(tc),
                             "teachers.mae.name": HD_TEACHER_B["mae"], "method.terms.tc_feature.teacher": tc}
       for tc in ("deit", "clip")},
    "l40_hybrid_clip": {**HD_COMMON, **HD_HYBRID, **HD_VIT_L, "method.tc": "clip",
                        "method.grid_align": "resize_input"},  # [inf] spec sec. 2 default
    # the same run with the spec's alternative: the 16 x 16 CLIP-L/14 token map resampled to 14 x 14
    "l40_hybrid_clip_interp": {**HD_COMMON, **HD_HYBRID, **HD_VIT_L, "method.tc": "clip",
                               "method.grid_align": "teacher_to_student", "method.grid_interp": "bilinear"},  # [inf]
}

# ------------------------------------------------------------------ UDI: ImageNet-1K table
UDI = {
    "udi_vits16_300ep": {
        "model.embed_dim": 384, "model.depth": 12, "model.num_heads": 6, "model.patch_size": 16,  # [udi-p] ViT-S/16
        "model.num_class_tokens": 2, "model.drop_path_rate": 0.1,  # [udi-p] CLS + CLS+; [udi]
        "data.batch_size": 1024, "optim.lr": 5e-4, "optim.ref_batch": 256,  # [udi] 8 x 128, lr x bs/256
        "optim.warmup_epochs": 10, "optim.min_lr": 1e-5,  # [udi-p] [udi]
        "optim.weight_decay": 0.04, "optim.weight_decay_end": 0.1,  # [udi-p] [udi]
        "optim.clip_grad": 3.0, "optim.clip_mode": "per_param", "train.epochs": 300,  # [udi]
        "train.precision": "fp16",  # [udi] AMP
        "method.out_dim": 65536, "method.head_hidden_dim": 2048, "method.head_bottleneck_dim": 256,  # [udi-p] [udi]
        "method.head_nlayers": 3, "method.norm_last_layer": False, "method.freeze_last_layer": 1,  # [udi]
        "method.student_temp": 0.1, "method.teacher_temp": 0.07, "method.warmup_teacher_temp": 0.04,  # [udi-p]
        "method.warmup_teacher_temp_epochs": 30, "method.center_momentum": 0.9,  # [udi-p] [udi]
        "method.momentum_teacher": 0.996, "method.window_global": 3, "method.window_local": 2,  # [udi]
        "data.aug.global_size": 224, "data.aug.local_size": 96, "data.aug.n_local": 10,  # [udi-p]
        "data.aug.global_scale": [0.25, 1.0], "data.aug.local_scale": [0.05, 0.25],  # [udi]
        "eval:linear.protocol": "udi", "eval:linear.lr": 0.02, "eval:linear.epochs": 100,  # [udi] README
        "eval:linear.n_last_blocks": 4, "eval:linear.aug": "mugs_strong",  # [udi]
        "eval:knn.T": 0.07, "eval:knn.report_k": 20,  # [dino]
    },
}

def same(got, want) -> bool:
    """Floats within rounding (1.5e-4 written as 0.00015), everything else exactly, types included."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and got == pytest.approx(want)
    return type(got) is type(want) and got == want


MAIN_TABLES = {("bootleg", "main_table"): BOOTLEG, ("sdssl", "table1"): SDSSL,
               ("hybrid_distill", "table1"): HYBRID, ("udi", "paper_in1k"): UDI}
CASES = [(paper, exp, run, key, want) for (paper, exp), runs in MAIN_TABLES.items()
         for run, table in runs.items() for key, want in table.items()]


@pytest.mark.parametrize("paper,experiment,run", sorted({c[:3] for c in CASES}))
def test_main_table_constants(paper, experiment, run):
    cfg = runs_of(paper, experiment)[run]
    wrong = []
    for _p, _e, _r, key, want in (c for c in CASES if c[:3] == (paper, experiment, run)):
        got = value(cfg, key)
        if not same(got, want):
            wrong.append(f"{key}: resolved {got!r}, expected {want!r}")
    assert not wrong, f"{paper} {experiment} run {run}:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("paper,experiment", sorted(MAIN_TABLES))
def test_every_main_table_run_is_pinned(paper, experiment):
    """A run added to (or renamed in) a main table needs its expected constants above."""
    planned, pinned = set(runs_of(paper, experiment)), set(MAIN_TABLES[paper, experiment])
    assert planned == pinned, (f"{paper} {experiment}: runs without pinned constants {sorted(planned - pinned)}, "
                               f"pinned runs the table no longer has {sorted(pinned - planned)}")


@pytest.mark.parametrize("paper,experiment", sorted(MAIN_TABLES))
def test_every_main_table_run_decays_after_its_warmup(paper, experiment):
    """A warm-up as long as the run would leave the lr rising to the end (issue 16, D1)."""
    for name, cfg in runs_of(paper, experiment).items():
        assert float(cfg.optim.warmup_epochs) < float(cfg.train.epochs), \
            f"{paper} {experiment} run {name}: warmup_epochs {cfg.optim.warmup_epochs} >= epochs {cfg.train.epochs}"


@pytest.mark.parametrize("experiment", ["ade20k_linear", "table2_cifar100", "table2_cars", "table2_inat19"])
def test_hybrid_experiments_reuse_the_table1_pretraining(experiment):
    """These experiments only evaluate Table 1's students: every run must resolve to the same
    training identity (config hash) as the Table 1 run of that name, or it would pretrain again."""
    from common.config import config_hash

    table1 = runs_of("hybrid_distill", "table1")
    for name, cfg in runs_of("hybrid_distill", experiment).items():
        assert config_hash(cfg) == config_hash(table1[name]), f"{experiment} run {name} differs from table1's"
