"""Diversity analysis of teachers and students (paper Sec. 2.1): average attention distance
per head and attention NMI per layer, as PNGs mirroring Figs. 1, 2, 3 and 5.

    python hybrid_distill/figures.py [scale=mini] [key=value ...] [--out hybrid_distill/figures]

The overrides select the runs as for ``hybrid_distill/launch.py``. The numbers come from eval/'s
``analysis`` protocol (``eval.metrics.attention_distance`` / ``attention_nmi`` on
``eval.metrics.n_images`` test images); one record per encoder is written to the run's records
directory (teachers under ``<results_root>/hybrid_distill/teachers/analysis/<name>/``) and
reused while the encoder and the analysis settings are unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from common.checkpoint import sha256_file
from common.plots import pyplot, save_figure
from common.train import run_dir_of
from eval.records import records_dir
from hybrid_distill.manifest import MissingTeacherError, resolve_encoder_teacher

PAPER = "hybrid_distill"
REPO = Path(__file__).resolve().parents[1]
TEACHERS = {"deit": "supervised ('DeiT')", "clip": "MoCo v3 ('CLIP')", "mae": "MAE"}
DISTILL = {"distill_deit": "Distill-DeiT", "distill_mae": "Distill-MAE", "distill_clip": "Distill-CLIP"}
HYBRID = {"hybrid_clip": "Hybrid Distill † (MAE + MoCo v3)"}


def analysis_record(encoder: Path | None, out_dir: Path, eval_cfg) -> dict | None:
    """The analysis record of ``encoder`` (evaluated unless current); None without an encoder."""
    from eval.api import evaluate_unless_current

    if encoder is None or not encoder.is_file():
        return None
    return evaluate_unless_current(str(encoder), "analysis", eval_cfg, out_dir=out_dir, run_info={"table": "figures"},
                                   checkpoint_sha256=sha256_file(encoder))[0]


def teacher_file(cfg, name: str, results_root: str) -> Path | None:
    """The encoder.pt of a mini teacher (scripts/build_teachers.py records it); None if not built."""
    spec = OmegaConf.to_container(cfg.teachers[name], resolve=True)
    try:
        return Path(resolve_encoder_teacher(name, spec, cfg.scale_name, cfg.train.out_root, results_root)["path"])
    except MissingTeacherError:
        return None


def per_head(record: dict, kind: str) -> np.ndarray:
    """``[layers, heads]`` of ``analysis/<kind>/layer<l>/head<h>``."""
    m = record["metrics"]
    layers = sorted({int(k.split("/")[2][5:]) for k in m if k.startswith(f"analysis/{kind}/layer") and "/head" in k})
    heads = sorted({int(k.split("/head")[1]) for k in m if k.startswith(f"analysis/{kind}/layer") and "/head" in k})
    return np.array([[m[f"analysis/{kind}/layer{l}/head{h}"] for h in heads] for l in layers])


def _scatter_panels(records: dict[str, dict], title: str, path: Path) -> Path | None:
    plt = pyplot()
    records = {k: v for k, v in records.items() if v is not None}
    if not records:
        return None
    fig, axes = plt.subplots(1, len(records), figsize=(3.6 * len(records), 3.2), sharey=True, squeeze=False)
    for ax, (label, rec) in zip(axes[0], records.items()):
        mad = per_head(rec, "mad")
        for layer, row in enumerate(mad, start=1):
            ax.scatter([layer] * len(row), row, s=14, alpha=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_xticks(range(1, len(mad) + 1))
    axes[0][0].set_ylabel("average head distance (px)")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=80)


def _nmi_curves(groups: dict[str, dict[str, dict]], title: str, path: Path) -> Path | None:
    plt = pyplot()
    groups = {g: {k: v for k, v in recs.items() if v is not None} for g, recs in groups.items()}
    groups = {g: recs for g, recs in groups.items() if recs}
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), sharey=True, squeeze=False)
    for ax, (group, recs) in zip(axes[0], groups.items()):
        for label, rec in recs.items():
            nmi = per_head(rec, "nmi").mean(axis=1)
            ax.plot(range(1, len(nmi) + 1), nmi, marker="o", label=label)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("layer")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("attention NMI (mean over heads)")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=80)


def main(argv: list[str] | None = None) -> list[Path]:
    from common.launch import plan_runs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / PAPER / "figures"))
    p.add_argument("overrides", nargs="*", help="key=value as given to hybrid_distill/launch.py, e.g. scale=mini")
    args = p.parse_intermixed_args(argv)
    runs = {run.name: run for run in plan_runs(PAPER, args.overrides)}
    cfg = next(iter(runs.values())).cfg
    # eval's own per-encoder plots are not needed: the figures below combine the encoders.
    eval_cfg = OmegaConf.merge(OmegaConf.to_container(cfg.eval, resolve=True), {"metrics": {"plots": False}})
    teacher_root = Path(str(cfg.results_root)) / PAPER / "teachers" / "analysis"
    teachers = {TEACHERS.get(n, n): analysis_record(teacher_file(cfg, n, str(cfg.results_root)), teacher_root / n, eval_cfg)
                for n in TEACHERS if n in cfg.teachers}
    students = {label: analysis_record(run_dir_of(runs[run].cfg) / "encoder.pt", records_dir(runs[run].cfg), eval_cfg)
                if run in runs else None for run, label in {**DISTILL, **HYBRID}.items()}
    distill = {k: students[k] for k in DISTILL.values()}
    hybrid = {k: students[k] for k in HYBRID.values()}
    out = Path(args.out)
    made = [
        _scatter_panels(teachers, "Fig. 1 analogue: head distance of the mini teachers", out / "fig1_head_distance_teachers.png"),
        _nmi_curves({"teachers": teachers, "single-teacher students": distill},
                    "Fig. 2 analogue: attention NMI per layer", out / "fig2_nmi.png"),
        _scatter_panels(distill, "Fig. 3 analogue: head distance of symmetric single-teacher students",
                        out / "fig3_head_distance_distill.png"),
        _scatter_panels(hybrid, "Fig. 5(a) analogue: head distance of Hybrid Distill students", out / "fig5a_head_distance_hybrid.png"),
        _nmi_curves({"Hybrid Distill students": hybrid, "teachers": teachers},
                    "Fig. 5(b) analogue: attention NMI per layer", out / "fig5b_nmi_hybrid.png"),
    ]
    made = [m for m in made if m is not None]
    for m in made:
        print(m)
    return made


if __name__ == "__main__":
    main()
