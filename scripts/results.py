"""Render RESULTS.md: every method of the four papers at the same mini budget, same protocols.

Reads the records written by scripts/cross_eval.py (results/cross/<scale>/<run>/ and the floors
in results/cross/floors-cross-<scale>/) and draws two plots:
linear-probe accuracy per block for every method, and accuracy against training cost; and, per
paper, the learning curves of its runs (online k-NN and RankMe against step, from each run's
log.jsonl, which training writes beside its done.json and DVC does not store: a checkout that
only pulled the runs draws no curves and says so).
Every number in the table links to the record it comes from. The headline runs with extra
pretraining seeds (`seed_runs` of dvc_runs.yaml) show k-NN and linear as mean +- std over the
seeds that have records, and the Claims section tests each paper's claimed direction on them
(scripts/claims.py); the same claims table goes to results/claims.json.

    python scripts/results.py [--results-root results] [--scale mini] [--out RESULTS.md]
                              [--plots docs/results] [--claims results/claims.json]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from common.config import run_location
from common.train import run_dir_of
from eval.encoders import arch_feature, built_arch, floor_label, init_name
from eval.records import CROSS, load_records, records_dir, same_recipe
from eval.stats import mean_pm_std
from eval.tables import floors_dir, random_floor_name
from scripts.claims import CLAIMS, LEVEL, assess

REPO = Path(__file__).resolve().parents[1]
PER_LAYER = re.compile(r"^linear/[a-z_]+@(\d+)/best/top1$")
COLUMNS = (  # header, protocol, metric (None = the record's headline), subdirectory
    ("k-NN", "knn", None, ""),
    ("linear (last block)", "linear", "last_block", ""),
    ("attentive", "attentive", "attentive/top1", ""),
    ("low-shot 1%", "lowshot", "lowshot/1pct/top1", ""),
    ("low-shot 10%", "lowshot", "lowshot/10pct/top1", ""),
    ("MNIST-5k k-NN", "knn", None, "mnist5k"),
)
# the columns measured on every seed of the headline runs (scripts/cross_eval.py --trim)
SEEDED = {c[0]: c for c in COLUMNS[:2]}


def _rel(path: str, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve().parent).as_posix() \
        if Path(path).resolve().is_relative_to(out.resolve().parent) else path


def _value(rec: dict | None, metric: str | None) -> float | None:
    if rec is None:
        return None
    if metric == "last_block":  # the per-layer grid's head on the final block (pixels: its only head)
        layers = per_layer(rec)
        return layers[max(layers)] if layers else rec["value"]
    return rec["value"] if metric is None else rec["metrics"].get(metric)


def arch_label(arch: dict) -> str:
    """What tells floors of one init apart: depth, patch size and the feature a random encoder
    is read at (eval.encoders.arch_feature: its first class token, or its patch mean)."""
    built = built_arch(arch)
    tokens = built["num_class_tokens"]
    readout = "patch mean" if arch_feature(arch) == "avgpool" else "cls" if tokens == 1 else f"cls of {tokens}"
    return f"depth {built['depth']}, patch {built['patch_size']}, {readout}"


def above_floor(rows: dict, seeds: dict, run: str, floors: tuple[dict, dict]) -> str:
    """k-NN (the seeds' mean) minus the k-NN of the run's own floor (`run_floors`): a random
    encoder of its init and its arch, the floor a method has to clear, not another encoder's.
    A floor whose record was read at another feature than the run's is no floor of it."""
    archs, of_run = floors
    found = seed_values(rows, seeds, run, SEEDED["k-NN"])
    key = of_run.get(run)
    floor = rows.get(random_floor_name(key), {}).get(("knn", "")) if key else None
    if not found or floor is None or floor.get("feature") != next(iter(found.values()))[1].get("feature"):
        return "–"
    mean = sum(v for v, _ in found.values()) / len(found)
    return f"{mean - floor['value']:+.1f} ({init_name(archs[key])}, {arch_label(archs[key])})"


def floor_row_label(name: str, init: str | None, archs: dict) -> str:
    """``random init (<init> init)``, and the arch where the floor is one of ``floor_archs``:
    several floors may share an init."""
    label = floor_label("random", init)
    key = name.removeprefix(random_floor_name(""))
    return f"{label}, {arch_label(archs[key])}" if key in archs else label


def rankme_cell(rec: dict | None, metric: str) -> str:
    """``metric`` (``rankme`` or ``rankme_centered``, common/health.py) of the k-NN test features
    (eval/knn.py), seed 0; – for a record made before eval measured it."""
    value = None if rec is None else rec["metrics"].get(f"health/{rec.get('feature')}/{metric}")
    return "–" if value is None else f"{value:.1f}"


def _cell(rec: dict | None, metric: str | None, out: Path) -> str:
    value = _value(rec, metric)
    return "–" if value is None else f"[{value:.1f}]({_rel(rec['_path'], out)})"


def seed_table() -> dict:
    return yaml.safe_load((REPO / "dvc_runs.yaml").read_text()).get("seed_runs") or {}


def floor_table() -> tuple[dict, dict]:
    """``floor_archs`` (floor key -> arch) and ``run_floors`` (run -> floor key) of dvc_runs.yaml."""
    table = yaml.safe_load((REPO / "dvc_runs.yaml").read_text())
    return table["floor_archs"], table["run_floors"]


def seed_values(rows: dict, seeds: dict, run: str, column: tuple) -> dict[int, tuple[float, dict]]:
    """{seed index: (value, record)} of one column over the seeds of `run` that have a record of
    seed 0's recipe (``same_recipe``); seed 0 is the run itself."""
    _, protocol, metric, sub = column
    names = {0: run, **{entry["seed_index"]: name for name, entry in seeds.items() if entry["base"] == run}}
    found = {}
    for index, name in sorted(names.items()):
        rec = rows.get(name, {}).get((protocol, sub))
        if (value := _value(rec, metric)) is None:
            continue
        if index and 0 in found and not same_recipe(found[0][1], rec):
            continue  # left from an earlier recipe of the run
        found[index] = (value, rec)
    return found


def _seeded_cell(found: dict[int, tuple[float, dict]], out: Path) -> str:
    """mean ± sample std (n) with every seed's value linking its record; one seed: its number."""
    if not found:
        return "–"
    links = [f"[{v:.1f}]({_rel(rec['_path'], out)})" for v, rec in found.values()]
    if len(found) == 1:
        return links[0]
    return f"{mean_pm_std(v for v, _ in found.values())} (n={len(found)}: {', '.join(links)})"


def claims_rows(rows: dict, seeds: dict) -> list[dict]:
    """Every claim of CLAIMS on every seeded column: paired differences, interval, verdict."""
    table = []
    for claim in CLAIMS:
        for header, column in SEEDED.items():
            better, worse = (seed_values(rows, seeds, run, column) for run in (claim.better, claim.worse))
            result = assess({i: v for i, (v, _) in better.items()}, {i: v for i, (v, _) in worse.items()})
            records = {side: [found[i][1]["_path"] for i in (result or {}).get("seeds", [])]
                       for side, found in (("better", better), ("worse", worse))}
            table.append({"paper": claim.paper, "better": claim.better, "worse": claim.worse,
                          "source": claim.source, "metric": header,
                          **(result or {"seeds": [], "verdict": "no records"}), "records": records})
    return table


def _signed(x: float) -> str:
    return f"{round(x, 1) + 0.0:+.1f}"  # + 0.0: a difference that rounds to zero prints as +0.0, not -0.0


def render_claims(claims: list[dict]) -> list[str]:
    lines = ["## Claims", "",
             "Each paper's claimed direction on its headline runs: the paired difference (claimed better "
             "minus claimed worse) of seed i against seed i (both pretrained with the same `train.seed`), "
             f"its mean over the seeds and a {LEVEL:.0%} Student-t interval. The verdict follows the "
             "interval: above 0 the claim holds at the mini budget, below 0 it is reversed, across 0 the "
             "difference is within the seed-to-seed noise. Also in `results/claims.json`.", "",
             "| paper | claim | metric | differences (seed: points) | mean | 95% interval | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in claims:
        diffs = ", ".join(f"{s}: {_signed(d)}" for s, d in zip(c["seeds"], c.get("differences", []))) or "–"
        mean = _signed(c["mean"]) if "mean" in c else "–"
        interval = f"[{_signed(c['low'])}, {_signed(c['high'])}]" if c.get("low") is not None else "–"
        lines.append(f"| {c['paper']} | {c['better']} > {c['worse']} | {c['metric']} | {diffs} | {mean} | "
                     f"{interval} | {c['verdict']} |")
    return lines


def train_cost(paper: str | None, run: str, scale: str) -> tuple[float | None, float | None]:
    """Pretraining wall time (s) and peak memory (MB) from the run's done.json, else from the
    paper's own records of the run, which copy both (runs/ comes from DVC, results/ is committed)."""
    if not paper:
        return None, None
    where = run_location(paper, scale, run, REPO / "runs", REPO / "results")
    done = run_dir_of(where) / "done.json"
    if done.exists():
        summary = json.loads(done.read_text())
        return summary.get("train_time_s"), summary.get("peak_memory_mb")
    record = next((r for r in load_records([records_dir(where)]) if r.get("train_time_s")), {})
    return record.get("train_time_s"), record.get("train_peak_memory_mb")


def per_layer(rec: dict | None) -> dict[int, float]:
    if rec is None:
        return {}
    return {int(m.group(1)): v for k, v in rec["metrics"].items() if (m := PER_LAYER.match(k))}


def collect(results_root: Path, scale: str, runs: dict) -> dict[str, dict[tuple[str, str], dict]]:
    """{row name: {(protocol, subdir): record}}: one row per run of `runs` (dvc_runs.yaml
    entries, seed runs included) that has cross-paper records at `scale`, and one per floor.
    A row is named by its records' directory, not by the `run` field inside them, so records
    made before a run was renamed fill the row of its new name."""
    dirs = {name: records_dir(run_location(entry["paper"], scale, name, results_root=results_root), CROSS)
            for name, entry in runs.items()}
    floors = floors_dir(results_root, CROSS, "cross", scale)
    dirs.update({d.name: d for d in sorted(floors.iterdir()) if d.is_dir()} if floors.is_dir() else {})
    rows: dict[str, dict[tuple[str, str], dict]] = {}
    for name, d in dirs.items():
        for rec in load_records([d]) if d.is_dir() else []:
            sub = Path(rec["_path"]).parent.name if Path(rec["_path"]).parent != d else ""
            rows.setdefault(name, {})[(rec["protocol"], sub)] = rec
    return rows


def render(results_root: Path, scale: str, out: Path, plots: Path) -> str:
    runs = yaml.safe_load((REPO / "dvc_runs.yaml").read_text())["runs"]
    seeds = seed_table()
    floors = floor_table()
    rows = collect(results_root, scale, {**runs, **seeds})
    lines = ["# Cross-paper results at the mini budget", "",
             "Every method below was pretrained on Fashion-MNIST at its paper's mini scale and evaluated "
             "by `scripts/cross_eval.py` with one eval config on the same class-balanced subsets (10,000 training and 2,000 test images; k-NN k=20, T=0.07; linear probe grid on "
             "frozen features, one head per block for the per-layer column; V-JEPA attentive probe; "
             "low-shot logistic regression; k-NN transfer to MNIST-5k). Each number links to its record "
             "(checkpoint sha256, config hash, commit, dataset hash, hardware, wall time, peak memory). "
             "Regenerate with `dvc repro tables` or `python scripts/results.py`. Pretraining times and peak "
             "memory come from each run's `done.json`; they are wall times on the hardware named below, "
             "which other work on the machine can stretch, so compare them only roughly. The mini "
             "budgets are small (see each paper's README): a row less than 5 k-NN points above its floor "
             "says little about the method, nor does any row about the paper scale. The headline runs of each paper show k-NN and "
             "linear as mean ± sample std over their pretraining seeds (n = the seeds with records, each "
             "linked); their other columns are seed 0's. \"k-NN − floor\" is that k-NN minus the k-NN of "
             "a randomly initialised encoder of the run's own init and architecture (the floor rows below; "
             "the cell names the floor's init, depth, patch size and the feature it is read at, and is – "
             "where that floor has no record or is read at another feature than the run). A run read at "
             "its patch mean though built with a class token (Hybrid Distill's students) is measured "
             "against its own architecture, class token included, read at the patch mean too. "
             "RankMe is the "
             "effective rank (Garrido et al. 2023) of the 2,000 test images' k-NN features of seed 0: 1 "
             "means one direction for every image, the encoder width is the ceiling. \"RankMe (centred)\" "
             "is the effective rank of the same features minus their mean over the images, so of how the "
             "images differ from one another: a large mean vector shared by every image (the patch mean of "
             "an encoder with a fixed sin-cos position embedding carries one) dominates the spectrum and can "
             "hold the raw RankMe near 1 for a trained encoder and its random init alike, while the centred "
             "one counts the directions the images spread along; – marks a record made before eval "
             "measured it.", "",
             "| paper | method | run | " + " | ".join([COLUMNS[0][0], "k-NN − floor (init)", "RankMe",
                                                     "RankMe (centred)", *(c[0] for c in COLUMNS[1:])]) +
             " | best block (linear) | pretrain time (min) | pretrain peak mem (GB) |",
             "|" + "---|" * (len(COLUMNS) + 9)]
    ordered = sorted(runs.items(), key=lambda kv: (kv[1]["paper"], kv[0]))
    names = [name for name, _ in ordered] + ["pixels"] + sorted(r for r in rows if r.startswith("random"))
    for name in names:
        recs = rows.get(name, {})
        if not recs:
            continue
        any_rec = next(iter(recs.values()))
        paper = runs[name]["paper"] if name in runs else "floor"
        layers = per_layer(recs.get(("linear", ""))) if name != "pixels" else {}
        best = f"{max(layers.values()):.1f} (block {max(layers, key=layers.get)})" if layers else "–"
        seconds, mem = train_cost(runs.get(name, {}).get("paper"), name, scale)
        cost = [f"{seconds / 60:.1f}" if seconds else "–", f"{mem / 1024:.2f}" if mem else "–"]
        cells = [_seeded_cell(seed_values(rows, seeds, name, column), out) if column[0] in SEEDED
                 else _cell(recs.get((column[1], column[3])), column[2], out) for column in COLUMNS]
        cells[1:1] = [above_floor(rows, seeds, name, floors), *(rankme_cell(recs.get(("knn", "")), metric)
                                                               for metric in ("rankme", "rankme_centered"))]
        method = floor_row_label(name, any_rec.get("init"), floors[0]) if name.startswith("random") \
            else any_rec.get("method")
        lines.append(f"| {paper} | {method} | {name} | " + " | ".join([*cells, best, *cost]) + " |")
    hardware = sorted({r.get("train_hardware") or r.get("hardware") for recs in rows.values() for r in recs.values()})
    commits = sorted({r["git_commit"] for recs in rows.values() for r in recs.values()})
    lines += ["", f"Hardware: {'; '.join(h for h in hardware if h)}. Evaluation commits: {', '.join(commits)}.", ""]
    lines += [*render_claims(claims_rows(rows, seeds)), ""]
    for png in draw({name: recs for name, recs in rows.items() if name not in seeds}, runs, scale, plots):
        lines.append(f"![{png.stem}]({_rel(str(png), out)})")
    curves, missing = draw_curves(runs, scale, plots)
    if curves:
        lines += ["", "Learning curves: online k-NN (the training monitor's fixed labelled subset, so lower than "
                  "the table's k-NN) and RankMe of the student's features on the health batch, against step.", ""]
        lines += [f"![{png.stem}]({_rel(str(png), out)})" for png in curves]
    if missing:
        lines += ["", f"No learning curve for {', '.join(missing)}: no log.jsonl in the run directory "
                  "(DVC restores encoder.pt and done.json only; retrain to draw them)."]
    return "\n".join(lines) + "\n"


RANKME_KEYS = ("health/student/rankme", "health/encoder/rankme")


def learning_curve(log: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of the online k-NN and of the monitored student's RankMe in a log.jsonl."""
    curve = {"knn": [], "rankme": []}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if "knn_online/top1" in entry:
            curve["knn"].append((entry["step"], entry["knn_online/top1"]))
        rankme = next((entry[k] for k in RANKME_KEYS if k in entry), None)
        if rankme is not None:
            curve["rankme"].append((entry["step"], rankme))
    return curve


def draw_curves(runs: dict, scale: str, plots: Path, runs_root: Path = REPO / "runs") -> tuple[list[Path], list[str]]:
    """learning_curves_<paper>.png per paper with a logged run; returns them and the runs without a log."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_paper, missing = {}, []
    for name, spec in runs.items():
        log = run_dir_of(run_location(spec["paper"], scale, name, runs_root)) / "log.jsonl"
        if log.is_file():
            by_paper.setdefault(spec["paper"], {})[name] = learning_curve(log)
        else:
            missing.append(name)
    made = []
    for paper, curves in sorted(by_paper.items()):
        fig, (knn_ax, rank_ax) = plt.subplots(1, 2, figsize=(11, 4))
        for name, curve in curves.items():
            for ax, key in ((knn_ax, "knn"), (rank_ax, "rankme")):
                if curve[key]:
                    ax.plot(*zip(*curve[key]), marker=".", label=name)
        knn_ax.set_ylabel("online k-NN top-1 (%)")
        rank_ax.set_ylabel("RankMe (student)")
        for ax in (knn_ax, rank_ax):
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"{paper}, {scale}: learning curves (step 0 = the init)")
        fig.tight_layout()
        plots.mkdir(parents=True, exist_ok=True)
        made.append(plots / f"learning_curves_{paper}.png")
        fig.savefig(made[-1], dpi=110)
        plt.close(fig)
    return made, missing


def draw(rows, runs, scale: str, plots: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, recs in rows.items():
        layers = per_layer(recs.get(("linear", "")))
        if layers:
            xs = sorted(layers)
            ax.plot(xs, [layers[x] for x in xs], marker="o", label=name)
    ax.set_xlabel("block")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title("Fashion-MNIST linear probe per block (mini budget)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    made.append(plots / "accuracy_per_layer.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, recs in rows.items():
        layers = per_layer(recs.get(("linear", "")))
        seconds, _ = train_cost(runs.get(name, {}).get("paper"), name, scale)
        if layers and seconds:
            acc = layers[max(layers)]
            ax.scatter(seconds / 60, acc)
            ax.annotate(name, (seconds / 60, acc), fontsize=7)
    ax.set_xlabel("pretraining wall time (min)")
    ax.set_ylabel("linear probe top-1, last block (%)")
    ax.set_title("Accuracy vs training cost (mini budget)")
    fig.tight_layout()
    made.append(plots / "accuracy_vs_cost.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)
    return made


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-root", default="results", help="the cross-paper records are under <results-root>/cross/")
    p.add_argument("--scale", choices=("smoke", "mini"), default="mini", help="the scale of the pipeline (params.yaml)")
    p.add_argument("--out", default="RESULTS.md")
    p.add_argument("--plots", default="docs/results")
    p.add_argument("--claims", default="results/claims.json")
    args = p.parse_args(argv)
    out, results_root = Path(args.out), Path(args.results_root)
    out.write_text(render(results_root, args.scale, out, Path(args.plots)))
    print(f"wrote {out}")
    claims = Path(args.claims)
    runs = yaml.safe_load((REPO / "dvc_runs.yaml").read_text())["runs"]
    seeds = seed_table()
    claims.write_text(json.dumps(claims_rows(collect(results_root, args.scale, {**runs, **seeds}), seeds),
                                 indent=1) + "\n")
    print(f"wrote {claims}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
