"""Bootleg's tables: the runs of an experiment (default: the mini comparison) beside the paper.

    python bootleg/tables.py [experiment=compare] [scale=mini] [key=value ...] [--out FILE]

The overrides are the ones given to ``bootleg/launch.py``, so the table reads what that launch
wrote; the floor rows (raw pixels, a random encoder per distinct init: I-JEPA's for Bootleg and
I-JEPA, timm's for MAE) come from ``python -m eval.tables floors --paper bootleg`` (eval/tables.py).
"""
from __future__ import annotations

from eval.tables import Column, Row, Table, render_cli, render_experiment, run_records

PAPER = "bootleg"
COLUMNS = (Column("k-NN top-1", "knn"), Column("linear top-1", "linear"), Column("attentive top-1", "attentive"))
METHOD_NAMES = {"bootleg": "Bootleg", "ijepa": "I-JEPA", "mae": "MAE", "mae_ema": "MAE-EMA",
                "crossmae": "CrossMAE", "data2vec": "data2vec 2.0"}

# Published numbers our text holds. The Bootleg paper's tables are not in our copy (only its
# abstract: "+10% over I-JEPA" on IN-1k and iNat21, and the main table's header naming MAE,
# CrossMAE, data2vec 2.0, I-JEPA and Bootleg), so the only values are I-JEPA's own IN-1k
# linear-probe numbers (Assran et al. 2023, Table 1), keyed by (method, model); the CrossMAE
# and data2vec 2.0 rows (ViT-S/16) have none: that paper lists data2vec 1.0 at ViT-L only.
PAPER_LINEAR_IN1K = {("ijepa", "vit_b16"): "72.9 (I-JEPA paper, 600 ep)",
                     ("ijepa", "vit_l16"): "77.5 (I-JEPA paper, 600 ep)",
                     ("mae", "vit_b16"): "68.0 (I-JEPA paper, MAE 1600 ep)",
                     ("mae", "vit_l16"): "76.0 (I-JEPA paper, MAE 1600 ep)"}
NOT_IN_TEXT = "not in our text"


def eval_encoder(cfg) -> str:
    """Which of the method's networks the run evaluates (the one read of that config key)."""
    return str(cfg.method.export_encoder)


def paper_cell(cfg, protocols: list[str]) -> str:
    """The paper's number for a run's row: only IN-1k linear probes of I-JEPA and MAE are known."""
    dataset = str(cfg.eval.data)

    def known(protocol: str) -> str:
        if protocol == "linear" and dataset.startswith("imagefolder") and "imagenet" in dataset:
            return PAPER_LINEAR_IN1K.get((cfg.method.name, cfg.arch), NOT_IN_TEXT)
        return NOT_IN_TEXT if not dataset.startswith("fashion_mnist") else "-"
    return "; ".join(sorted({known(p) for p in protocols}))


def table(runs) -> Table:
    cfg = runs[0].cfg
    columns = [c for c in COLUMNS if c.protocol in cfg.eval.protocols]
    protocols = [c.protocol for c in columns]
    rows = [Row(f"{METHOD_NAMES.get(run.cfg.method.name, run.cfg.method.name)} "
                f"(run {run.name}, {eval_encoder(run.cfg)} encoder)", run_records(run), [paper_cell(run.cfg, protocols)])
            for run in runs]
    return Table(f"{cfg.experiment_name}: {cfg.eval.data}", columns, rows, ["paper"],
                 ["Top-1 accuracy (%) on the test split."])


def render(overrides=()) -> str:
    return render_experiment(PAPER, overrides, table)


if __name__ == "__main__":
    render_cli(render)
