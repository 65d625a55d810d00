"""UDI tables: our records beside the paper's numbers (``python udi/tables.py [experiment=mini] [key=value ...]``).

``experiment=mini`` (default) and ``paper_in1k``: DINO, UDI (its regular class token), UDI+ (the
extra class token: k-NN and low-shot of the run's ``cls_plus`` extra evaluation, the linear head
on the extra token) and both tokens concatenated; the ablation experiments: each run beside the
paper's 100-epoch number. The overrides are the ones given to ``udi/launch.py``; the floor rows
come from eval/tables.py. Missing records show as "—", never invented.
"""
from __future__ import annotations

from eval.records import extra_records_dir
from eval.tables import (Column, Row, Table, fmt, load_run, render_cli, render_experiment, rows_beside_paper,
                         run_records)

PAPER = "udi"
UDI_PLUS = "cls_plus"  # the extra evaluation of a UDI run on its extra class token (experiment configs)

# [paper: UDI Table 4 (ImageNet-1K, ViT-S/16, 1200 effective epochs) and the low-shot table]
PAPER_IN1K = {
    "DINO": {"linear": 76.1, "knn": 72.8, "lowshot_1pct": 64.5, "lowshot_10pct": 72.2},
    "UDI": {"linear": 77.6, "knn": 75.6, "lowshot_1pct": 66.7, "lowshot_10pct": 74.1},
    "UDI+": {"linear": 75.1, "knn": 68.9, "lowshot_1pct": 66.1, "lowshot_10pct": 73.8},
}
# [paper §4.4 / App. 10, 100-epoch ablations, IN-1K linear top-1 (and k-NN where given)], by run name
PAPER_ABLATIONS = {
    "ablation_window": {"window1": 75.5, "window2": 76.2, "window3": 76.3, "window4": 75.9},
    "ablation_alpha": {"alpha0.1": 75.9, "alpha0.5": 76.3},
    "ablation_objective": {"mm_weight0": 75.8, "mm_weight0.5": 76.2, "mm_weight1": 76.3, "local_patch": None},
    # Table 15: DINO + lambda InfoNCE; the second ratio's label is lost (0.25 inferred)
    "ablation_infonce": {"infonce0": 74.5, "infonce0.25": 75.1, "infonce0.5": 75.3, "infonce1": 71.9},
}
PAPER_ABLATION_KNN = {"ablation_objective": {"mm_weight0": 73.0, "mm_weight0.5": 74.1, "mm_weight1": 74.9}}

# k-NN and low-shot on the row's token; linear: the head of the row's feature in the run's grid
COLUMNS = (Column("k-NN top-1", "knn"), Column("linear top-1", "linear", "linear/{feature}/best/top1"),
           Column("low-shot 1%", "lowshot", "lowshot/1pct/top1"), Column("low-shot 10%", "lowshot", "lowshot/10pct/top1"))
ABLATION_COLUMNS = (Column("linear top-1", "linear"), Column("k-NN top-1", "knn"))  # headline: best of the grid
PAPER_HEADERS = ("paper IN-1K linear", "paper k-NN", "paper LR 1%", "paper LR 10%")
NOTE = ("k-NN at k=20 (T=0.07) and low-shot logistic regression (best lambda) on the final class token; linear = "
        "DINO/UDI protocol on the last 4 class tokens (best of the lr grid). Paper: ImageNet-1K ViT-S/16, 1200 "
        "effective epochs. At mini scale (Fashion-MNIST) the two are not comparable in absolute value; compare the "
        "ordering. '—' = not run / not defined.")


def paper_cells(label: str) -> list[str]:
    numbers = PAPER_IN1K.get(label)
    return [fmt(numbers[k]) for k in ("linear", "knn", "lowshot_1pct", "lowshot_10pct")] if numbers else []


def comparison(runs) -> Table:
    """DINO, UDI, UDI+ and UDI's two tokens together (a method without a run is a paper-only row)."""
    by_method = {str(run.cfg.method.name): run for run in runs}
    dino = run_records(by_method["dino"]) if "dino" in by_method else {}
    udi_run = by_method.get("udi")
    udi = run_records(udi_run) if udi_run else {}
    plus = {**udi, **load_run(extra_records_dir(udi_run.cfg, UDI_PLUS))} if udi_run else {}
    both = {"linear": udi["linear"]} if "linear" in udi else {}
    rows = [Row("DINO", dino, paper_cells("DINO"), "cls_last4"), Row("UDI", udi, paper_cells("UDI"), "cls_last4"),
            Row("UDI+", plus, paper_cells("UDI+"), "cls_plus_last4"),
            Row("UDI cls + cls+", both, feature="cls_last4+cls_plus_last4")]
    cfg = runs[0].cfg
    return Table(f"UDI {cfg.experiment_name}: {cfg.eval.data}", COLUMNS, rows, PAPER_HEADERS, [NOTE])


def ablation(runs) -> Table:
    experiment = str(runs[0].cfg.experiment_name)
    knn = PAPER_ABLATION_KNN.get(experiment, {})
    paper = {run: (run, [fmt(linear), fmt(knn.get(run))]) for run, linear in PAPER_ABLATIONS[experiment].items()}
    return Table(f"{experiment} (ViT-S/16, ImageNet-1K, 100 epochs)", ABLATION_COLUMNS, rows_beside_paper(runs, paper),
                 ["paper linear", "paper k-NN"])


def table(runs) -> Table:
    return ablation(runs) if str(runs[0].cfg.experiment_name) in PAPER_ABLATIONS else comparison(runs)


def render(overrides=()) -> str:
    return render_experiment(PAPER, overrides, table)


if __name__ == "__main__":
    render_cli(render)
