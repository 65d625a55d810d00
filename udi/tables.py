"""UDI tables: our records side by side with the paper's numbers.

``python udi/tables.py [experiment ...]`` renders markdown (default: every experiment);
``render(experiment)`` is what ``udi/launch.py`` prints after its runs.  For the mini
comparison it first completes the rows that the training jobs do not produce themselves:

* UDI+: k-NN and low-shot of the UDI encoder on its extra class token (``eval.token=cls_plus``),
  written to ``results/udi/<run>/cls_plus/``;
* floors: the same protocols on raw pixels and on a randomly initialised encoder of the same
  architecture (``results/udi/floor_pixels``, ``results/udi/floor_random``).

Missing records are reported as "not run", never invented.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "udi"
RUNS = REPO / "runs" / "udi"

# [paper: UDI Table 4 (ImageNet-1K, ViT-S/16, 1200 effective epochs) and the low-shot table]
PAPER_IN1K = {
    "DINO": {"linear": 76.1, "knn": 72.8, "lowshot_1pct": 64.5, "lowshot_10pct": 72.2},
    "UDI": {"linear": 77.6, "knn": 75.6, "lowshot_1pct": 66.7, "lowshot_10pct": 74.1},
    "UDI+": {"linear": 75.1, "knn": 68.9, "lowshot_1pct": 66.1, "lowshot_10pct": 73.8},
}
# [paper §4.4 / App. 10, 100-epoch ablations, IN-1K linear top-1]
PAPER_ABLATIONS = {
    "ablation_window": {"window1": 75.5, "window2": 76.2, "window3": 76.3, "window4": 75.9},
    "ablation_alpha": {"alpha0.1": 75.9, "alpha0.5": 76.3},
    "ablation_objective": {"mm_weight0": 75.8, "mm_weight0.5": 76.2, "mm_weight1": 76.3, "local_patch": None},
    # Table 15: DINO + lambda InfoNCE; the second ratio's label is lost (0.25 inferred)
    "ablation_infonce": {"infonce0": 74.5, "infonce0.25": 75.1, "infonce0.5": 75.3, "infonce1": 71.9},
}
PAPER_ABLATION_KNN = {"ablation_objective": {"mm_weight0": 73.0, "mm_weight0.5": 74.1, "mm_weight1": 74.9}}

# mini rows: (label, run directory, token for k-NN / low-shot, linear feature)
MINI_ROWS = [
    ("DINO", "dino", "cls", "cls_last4"),
    ("UDI", "udi", "cls", "cls_last4"),
    ("UDI+", "udi", "cls_plus", "cls_plus_last4"),
    ("UDI cls + cls+", "udi", None, "cls_last4+cls_plus_last4"),
    ("floor: pixels", "floor_pixels", "pixels", "pixels"),
    ("floor: random init", "floor_random", "cls", "cls_last4"),
]


def load_record(directory: Path, protocol: str) -> dict | None:
    path = directory / f"{protocol}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def record_dir(run: str, token: str | None) -> Path:
    """UDI+ records live beside the run's own ones, in a per-token subdirectory."""
    return RESULTS / run / "cls_plus" if token == "cls_plus" else RESULTS / run


def mini_eval_cfg() -> dict:
    from common.config import load_config

    cfg = load_config("udi", ["experiment=mini", "method=udi"])
    return OmegaConf.to_container(cfg.eval, resolve=True)


def complete_mini(experiment: str = "mini") -> None:
    """Run the evaluations the mini table needs that the training jobs do not produce."""
    from eval.api import evaluate

    encoder = RUNS / "udi" / "encoder.pt"
    if not encoder.is_file():
        return
    base = mini_eval_cfg()
    base.pop("protocols", None)
    jobs = [("pixels", "floor_pixels", None, p) for p in ("knn", "linear", "lowshot")]
    jobs += [(f"random:{encoder}", "floor_random", None, p) for p in ("knn", "linear", "lowshot")]
    for path, run, token, protocol in jobs:
        out = record_dir(run, token)
        if load_record(out, protocol) is not None:
            continue
        cfg = dict(base, token=token, table=experiment, row=run if token is None else f"{run}+{token}")
        if run == "floor_pixels" and protocol == "linear":
            cfg["linear"] = dict(base["linear"], features=["pixels"])
        if run == "floor_random" and protocol == "linear":
            cfg["linear"] = dict(base["linear"], features=["cls_last4"])
        evaluate(path, protocol, cfg, out_dir=out,
                 run_info={"paper": "udi", "run": run, "method": run if token is None else f"udi+{token}"})


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.1f}"


def _metric(record: dict | None, key: str):
    if record is None:
        return None
    return record["metrics"].get(key)


def mini_row(run: str, token: str | None, feature: str) -> dict:
    directory = RESULTS / run
    out = {"knn": None, "linear": None, "lowshot_1pct": None, "lowshot_10pct": None, "records": []}
    linear = load_record(directory, "linear")
    out["linear"] = _metric(linear, f"linear/{feature}/best/top1")
    if token is not None:
        token_dir = record_dir(run, token)
        knn, lowshot = load_record(token_dir, "knn"), load_record(token_dir, "lowshot")
        if knn is not None:
            out["knn"] = knn["value"]
        out["lowshot_1pct"] = _metric(lowshot, "lowshot/1pct/top1")
        out["lowshot_10pct"] = _metric(lowshot, "lowshot/10pct/top1")
        out["records"] += [r for r in (knn, lowshot) if r]
    if linear:
        out["records"].append(linear)
    return out


def provenance(records: list[dict]) -> list[str]:
    lines, seen = [], set()
    for r in records:
        key = (r.get("run"), r["protocol"], r.get("feature"))
        if key in seen:
            continue
        seen.add(key)
        sha = (r.get("checkpoint_sha256") or "-")[:12]
        lines.append(f"| {r.get('run')} | {r['protocol']} | {r.get('feature') or '-'} | {sha} | {r.get('config_hash') or '-'} | "
                     f"{(r.get('git_commit') or '-')[:10]} | {(r.get('dataset_hash') or '-')[:12]} | "
                     f"{r.get('wall_time_s')} | {r.get('hardware')} |")
    return lines


def render_mini(experiment: str = "mini") -> str:
    head = ["| method | k-NN top-1 | linear top-1 | low-shot 1% | low-shot 10% | paper IN-1K linear | paper k-NN "
            "| paper LR 1% | paper LR 10% |", "|---|---|---|---|---|---|---|---|---|"]
    rows, records = [], []
    for label, run, token, feature in MINI_ROWS:
        ours = mini_row(run, token, feature)
        records += ours["records"]
        paper = PAPER_IN1K.get(label, {})
        rows.append(f"| {label} | {_fmt(ours['knn'])} | {_fmt(ours['linear'])} | {_fmt(ours['lowshot_1pct'])} | "
                    f"{_fmt(ours['lowshot_10pct'])} | {_fmt(paper.get('linear'))} | {_fmt(paper.get('knn'))} | "
                    f"{_fmt(paper.get('lowshot_1pct'))} | {_fmt(paper.get('lowshot_10pct'))} |")
    notes = [
        "",
        "Ours: Fashion-MNIST (mini scale, udi/configs/scale/mini.yaml); k-NN at k=20 (T=0.07) and low-shot "
        "logistic regression (best lambda) on the final class token; linear = DINO/UDI protocol on the last 4 "
        "class tokens (best of the lr grid). Paper: ImageNet-1K ViT-S/16, 1200 effective epochs. "
        "The two are not comparable in absolute value; compare the ordering. '—' = not run / not defined.",
        "",
        "| run | protocol | feature | checkpoint sha256 | config hash | git commit | dataset hash | wall s | hardware |",
        "|---|---|---|---|---|---|---|---|---|",
        *provenance(records),
    ]
    return "\n".join([f"### UDI mini comparison ({experiment})", "", *head, *rows, *notes])


def render_paper_experiment(experiment: str) -> str:
    paper = PAPER_ABLATIONS.get(experiment, {})
    knn = PAPER_ABLATION_KNN.get(experiment, {})
    lines = [f"### {experiment} (ViT-S/16, ImageNet-1K)", "",
             "| run | ours linear | ours k-NN | paper linear | paper k-NN |", "|---|---|---|---|---|"]
    for run, value in paper.items():
        linear, nn_rec = load_record(RESULTS / run, "linear"), load_record(RESULTS / run, "knn")
        ours_linear = linear["value"] if linear else None
        ours_knn = nn_rec["value"] if nn_rec else None
        lines.append(f"| {run} | {_fmt(ours_linear) if linear else 'not run'} | {_fmt(ours_knn) if nn_rec else 'not run'} "
                     f"| {_fmt(value)} | {_fmt(knn.get(run))} |")
    return "\n".join(lines)


def render_paper_in1k() -> str:
    lines = ["### paper_in1k (ViT-S/16, ImageNet-1K, 300 epochs)", "",
             "| method | paper linear | paper k-NN | paper LR 1% | paper LR 10% | ours |", "|---|---|---|---|---|---|"]
    ran = (RESULTS / "udi_vits16_300ep" / "knn.json").is_file()
    for label, numbers in PAPER_IN1K.items():
        lines.append(f"| {label} | {_fmt(numbers['linear'])} | {_fmt(numbers['knn'])} | "
                     f"{_fmt(numbers['lowshot_1pct'])} | {_fmt(numbers['lowshot_10pct'])} | "
                     f"{'see results/udi/udi_vits16_300ep' if ran and label != 'DINO' else 'not run (needs GPUs)'} |")
    return "\n".join(lines)


EXPERIMENTS = ("mini", "paper_in1k", *PAPER_ABLATIONS)


def render(experiment: str) -> str:
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown UDI experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    if experiment == "mini":
        complete_mini(experiment)
        return render_mini(experiment)
    if experiment == "paper_in1k":
        return render_paper_in1k()
    return render_paper_experiment(experiment)


if __name__ == "__main__":
    names = sys.argv[1:] or list(EXPERIMENTS)
    print("\n\n".join(render(name) for name in names))
