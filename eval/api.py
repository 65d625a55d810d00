"""``evaluate``: what the paper pipelines call after pretraining (docs/CONTRACTS.md)."""
from __future__ import annotations

import copy
import importlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.provenance import resolve_device
from eval import settings
from eval.context import EvalContext
from eval.encoders import init_name, load as load_encoder_spec
from eval.features import Extraction, Preprocess
from eval.records import Stopwatch, extra_records_dir, make_record, records_dir, write_record

log = logging.getLogger(__name__)

# protocol -> (module with `run(ctx)`, config section that determines its result)
PROTOCOL_MODULES = {"knn": ("eval.knn", "knn"), "linear": ("eval.linear", "linear"),
                    "attentive": ("eval.attentive", "attn_probe"), "lowshot": ("eval.lowshot", "lowshot"),
                    "finetune": ("eval.finetune", "finetune"), "analysis": ("eval.analysis", "metrics"),
                    "segment": ("eval.segmentation", "seg")}


def image_shape(dataset) -> tuple[int, int]:
    """(channels, size) of the images of ``dataset``."""
    images = getattr(dataset, "images", None)
    if images is not None:
        return int(images.shape[3]), int(images.shape[1])
    c, h, _ = dataset.load_image(0).shape
    return int(c), int(h)


def val_split_of(cfg) -> str:
    """``eval.val_split``, else ``val`` for ImageNet-layout folders and ``test`` for the rest."""
    return cfg.val_split or ("val" if str(cfg.data).startswith("imagefolder:") else "test")


def build_context(encoder_path, cfg, out_dir) -> EvalContext:
    from common.data import get_dataset

    val_split = val_split_of(cfg)
    train = get_dataset(cfg.data, "train", root=cfg.root, subset=cfg.train_subset, seed=int(cfg.seed))
    val = get_dataset(cfg.data, val_split, root=cfg.root, subset=cfg.val_subset, seed=int(cfg.seed))
    encoder = load_encoder_spec(str(encoder_path), cfg.data, image_shape(train), seed=int(cfg.seed))
    pre = Preprocess(encoder.meta, cfg.val_resize)
    return EvalContext(encoder=encoder, cfg=cfg,
                       train=Extraction(train, "train", pre, cfg.train_subset, int(cfg.seed)),
                       val=Extraction(val, val_split, pre, cfg.val_subset, int(cfg.seed)),
                       num_classes=train.num_classes, device=resolve_device(cfg.device), out_dir=Path(out_dir))


def identity_of(ctx: EvalContext, cfg, run_info: dict | None) -> dict:
    meta = ctx.encoder.meta
    # which network of its run the encoder is (method.export_encoder, in the meta of those that have two)
    exported = meta.get("encoder") if ctx.encoder.kind == "encoder" else None
    ident = {"method": meta.get("method"), "paper": meta.get("paper"), "run": meta.get("run"),
             "table": cfg.table, "row": cfg.row, "checkpoint_sha256": ctx.encoder.sha256,
             "config_hash": meta.get("config_hash"), "recipe_hash": meta.get("recipe_hash"),
             "encoder_kind": ctx.encoder.kind,
             "eval_encoder": exported, "train_git_commit": meta.get("train_git_commit"),
             "init": init_name(ctx.encoder.arch) if ctx.encoder.arch else None}
    ident.update({k: v for k, v in (run_info or {}).items() if v is not None})
    return ident


def evaluate(encoder_path, protocol: str, eval_cfg=None, out_dir="results", run_info: dict | None = None) -> list[dict]:
    """Run one protocol on one encoder; write ``<out_dir>/<protocol>.json``; return ``[record]``.

    ``encoder_path``: an ``encoder.pt`` (or its run directory), ``pixels`` or
    ``random:<encoder.pt | arch.json>``. ``eval_cfg``: the ``eval:`` block (only what differs
    from ``eval/configs/eval.yaml``).
    """
    settings.check_protocol(protocol)
    cfg = settings.resolve(eval_cfg)
    module_name, section = PROTOCOL_MODULES[protocol]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # per protocol on GPU; CPU peak RSS cannot be reset
    module = importlib.import_module(module_name)
    with Stopwatch() as watch:
        # a protocol with its own data (segment) builds its own context and names its dataset
        ctx = getattr(module, "build_context", build_context)(encoder_path, cfg, out_dir)
        metrics, headline, extra = module.run(ctx)
    dataset = module.record_dataset(cfg) if hasattr(module, "record_dataset") else cfg.data
    record = make_record(
        protocol=protocol, metric=headline, metrics=metrics, identity=identity_of(ctx, cfg, run_info),
        dataset=dataset, dataset_hash=ctx.train.dataset.hash, wall_time_s=watch.seconds,
        extra={"eval_config_hash": settings.section_hash(cfg, section), "scale": cfg.scale,
               "train_images": len(ctx.train.dataset), "val_images": len(ctx.val.dataset), **extra})
    path = write_record(record, out_dir)
    log.info("%s: %s = %.3f -> %s", protocol, headline, record["value"], path)
    return [record]


def current_record(out_dir, protocol: str, eval_cfg=None, checkpoint_sha256: str | None = None) -> dict | None:
    """The record in ``<out_dir>/<protocol>.json`` if it was made under the same protocol
    settings (``eval_config_hash``) and, when given, from the same checkpoint; else None."""
    path = Path(out_dir) / f"{protocol}.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    same_protocol = old.get("eval_config_hash") == settings.section_hash(
        settings.resolve(eval_cfg), PROTOCOL_MODULES[settings.check_protocol(protocol)][1])
    same_encoder = checkpoint_sha256 is None or old.get("checkpoint_sha256") == checkpoint_sha256
    return old if same_protocol and same_encoder else None


def evaluate_unless_current(encoder_path, protocol: str, eval_cfg=None, out_dir="results",
                            run_info: dict | None = None, checkpoint_sha256: str | None = None) -> list[dict]:
    """``evaluate``, unless a current record (see ``current_record``) is already there: a
    changed probe schedule or encoder re-evaluates, an unchanged one costs nothing."""
    old = current_record(out_dir, protocol, eval_cfg, checkpoint_sha256)
    if old is not None:
        print(f"reusing {Path(out_dir) / (protocol + '.json')} ({protocol}: {old['metric']} = {old['value']:.2f})",
              flush=True)
        return [old]
    return evaluate(encoder_path, protocol, eval_cfg, out_dir=out_dir, run_info=run_info)


def evaluate_run(cfg, summary: dict) -> list[dict]:
    """Every protocol of ``cfg.eval`` and of each ``cfg.extra_evals`` entry on a finished run's
    encoder (``summary``: its ``done.json``), reusing current records. The papers' launchers pass
    this to ``common.launch.main`` as the step after training."""
    protocols = list(cfg.eval.get("protocols", []))
    if not protocols and not cfg.get("extra_evals"):
        return []
    out_dir = records_dir(cfg)
    run_info = {"method": cfg.method.name, "paper": cfg.paper, "run": cfg.run_name,
                "experiment": cfg.experiment_name, "config_hash": summary["config_hash"],
                "train_time_s": summary.get("train_time_s"),
                "train_peak_memory_mb": summary.get("peak_memory_mb"),
                "train_hardware": summary.get("hardware"), "health": summary.get("health")}
    jobs = [(protocol, cfg.eval, out_dir, run_info) for protocol in protocols]
    extras = OmegaConf.to_container(cfg.extra_evals, resolve=True) if cfg.get("extra_evals") else {}
    for name, extra in extras.items():
        extra_cfg = OmegaConf.merge(cfg.eval, {k: v for k, v in extra.items() if k != "protocols"})
        extra_info = {**run_info, "method": f"{cfg.method.name}+{name}"}
        jobs += [(protocol, extra_cfg, extra_records_dir(cfg, name), extra_info) for protocol in extra["protocols"]]
    records = []
    for protocol, eval_cfg, out, info in jobs:
        records += evaluate_unless_current(summary["encoder"], protocol, eval_cfg, out_dir=out,
                                           run_info=info, checkpoint_sha256=summary["encoder_sha256"])
    return records


# What the extra pretraining seeds of a run are evaluated with (scripts/seeds.py, cross_eval.py
# --trim): the two columns whose cells are mean ± std over seeds. k-NN on the final token only
# and per-block linear heads restricted to the last block (eval.layers = 1): the same metric
# names as seed 0's final-layer columns, from the same features, recipe and lr grid.
SEED_PROTOCOLS = ("knn", "linear")
SEED_EVAL = {"layers": 1, "knn": {"per_layer": False}}


def seed_eval_cfg(cfg):
    """A run's config with its ``eval`` block and ``extra_evals`` trimmed to SEED_PROTOCOLS and
    SEED_EVAL (an extra evaluation left with no protocol is dropped); the rest unchanged."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(cfg, False)  # eval.layers and eval.knn may be absent from the run's block
    cfg.merge_with({"eval": SEED_EVAL})
    cfg.eval.protocols = [p for p in cfg.eval.get("protocols", []) if p in SEED_PROTOCOLS]
    extras = OmegaConf.to_container(cfg.extra_evals, resolve=True) if cfg.get("extra_evals") else {}
    trimmed = {name: {**extra, "protocols": [p for p in extra["protocols"] if p in SEED_PROTOCOLS]}
               for name, extra in extras.items()}
    if extras:
        cfg.extra_evals = {name: extra for name, extra in trimmed.items() if extra["protocols"]}
    return cfg


def evaluate_seed_run(cfg, summary: dict) -> list[dict]:
    """``evaluate_run`` of a pretraining seed (scripts/seeds.py --stage eval): the paper's own
    eval settings, trimmed by ``seed_eval_cfg``; records in the seed run's ``records_dir``."""
    return evaluate_run(seed_eval_cfg(cfg), summary)
