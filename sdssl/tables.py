"""SDSSL tables: our rows beside the paper's (``python sdssl/tables.py [experiment=mini] [key=value ...]``).

``experiment=mini`` (default): final-layer k-NN and linear of the six methods, SD minus its
baseline, then the multi-exit tables (a linear probe and a k-NN per block). ``experiment=table1``
gives Table 1 at paper scale, ``table5`` / ``table6`` / ``fig9`` the ablations. The overrides
are the ones given to ``sdssl/launch.py``; the floor rows come from eval/tables.py.
"""
from __future__ import annotations

from eval.tables import (Column, Row, Table, delta, per_layer_table, render_cli, render_experiment,
                         rows_beside_paper, run_records, table_floors, load_run)

PAPER = "sdssl"
LABELS = {"simclr": "SimCLR", "sd_simclr": "SD-SimCLR", "byol": "BYOL", "sd_byol": "SD-BYOL",
          "moco_v3": "MoCo v3", "sd_moco_v3": "SD-MoCo v3"}
BASELINE_OF = {"sd_simclr": "simclr", "sd_byol": "byol", "sd_moco_v3": "moco_v3"}
# Final layer: the class token after the final LayerNorm; the linear head of the last block of
# the multi-exit grid (the only head of a single-feature grid, the pixel floor's).
FINAL = (Column("k-NN top-1", "knn"), Column("linear top-1", "linear", "linear/{feature}/best/top1"))

# Paper Table 1: ImageNet (k-NN, linear) per architecture [paper §4.2].
PAPER_TABLE1 = {
    "simclr": {"s32": (51.5, 52.8), "s16": (57.8, 62.1), "b16": (62.1, 70.5)},
    "sd_simclr": {"s32": (53.4, 55.3), "s16": (59.1, 65.0), "b16": (64.4, 72.1)},
    "byol": {"s32": (56.4, 59.8), "s16": (66.0, 70.3), "b16": (68.1, 73.7)},
    "sd_byol": {"s32": (57.9, 61.8), "s16": (67.2, 71.5), "b16": (70.3, 74.5)},
    "moco_v3": {"s32": (57.1, 60.7), "s16": (66.5, 70.0), "b16": (69.7, 75.1)},
    "sd_moco_v3": {"s32": (59.0, 63.7), "s16": (68.0, 71.5), "b16": (72.0, 76.0)},
}
ARCHS = {(384, 32): ("s32", "ViT-S/32"), (384, 16): ("s16", "ViT-S/16"), (768, 16): ("b16", "ViT-B/16")}
# Tables 5 and 6 (ViT-S/16, MoCo v3, 100 epochs, ImageNet k-NN) [paper §4.5], by run name.
PAPER_TABLE5 = {"table5-moco_v3": ("MoCo v3", ["60.5"]), "table5-moco_v3_plus_pred": ("+ pred. loss", ["60.8"]),
                "table5-sd_moco_v3": ("SD-MoCo v3", ["62.6"]), "table5-no_ratio_anneal": ("- ratio anneal", ["60.2"]),
                "table5-no_pred_loss": ("- pred. loss", ["61.9"])}
PAPER_TABLE6 = {"table6-moco_v3": ("MoCo v3", ["60.5"]), "table6-wo_mlp": ("w/o MLP", ["60.3"]),
                "table6-mlp2": ("2L-MLP", ["61.3"]), "table6-mlp_every4": ("MLP/4", ["61.3"]),
                "table6-mlp_every3": ("MLP/3", ["61.5"]), "table6-mlp_every2": ("MLP/2", ["61.5"]),
                "table6-mlp_every1": ("MLP/1", ["62.6"])}
# Fig. 3 gives values only in the text: SD-MoCo v3 minus MoCo v3, ViT-S/16 linear [paper §4.2].
PAPER_MULTI_EXIT_TEXT = "paper (Fig. 3, ViT-S/16, text only): SD-MoCo v3 - MoCo v3 = +1.2 at layer 12, +34.3 at layer 6"


def arch_of(cfg) -> tuple[str, str]:
    """(Table 1's key, label) of a run's ViT; a smaller ViT (mini) is compared with ViT-S/16."""
    return ARCHS.get((int(cfg.model.embed_dim), int(cfg.model.patch_size)), ARCHS[(384, 16)])


def method_rows(runs) -> list[Row]:
    """One row per run, labelled by its method; an SD run is compared with its baseline's run."""
    rows, by_method = [], {}
    for run in runs:
        method = str(run.cfg.method.name)
        key, arch = arch_of(run.cfg)
        paper, base = PAPER_TABLE1[method][key], PAPER_TABLE1.get(BASELINE_OF.get(method), {}).get(key)
        cells = [f"{p}{delta(p, b)}" for p, b in zip(paper, base or (None, None))]
        label = LABELS[method] if len({arch_of(r.cfg) for r in runs}) == 1 else f"{LABELS[method]}, {arch}"
        row = Row(label, run_records(run), cells, baseline=by_method.get((BASELINE_OF.get(method), key)))
        by_method[(method, key)] = row
        rows.append(row)
    return rows


def comparison(runs) -> Table:
    """The six methods (mini, or Table 1 at paper scale) with the multi-exit tables below."""
    cfg = runs[0].cfg
    rows = method_rows(runs)
    depth = int(cfg.model.depth)
    random_floors = [Row(f"floor: {f.label}", load_run(f.out_dir)) for f in table_floors(runs) if f.arch is not None]
    after = []
    for protocol, title in (("linear", "linear probe per block (multi-exit, Fig. 3)"), ("knn", "k-NN per block")):
        after += [*per_layer_table(f"{title}, top-1 on block 1..{depth}; Δ rows: SD minus baseline",
                                   [*random_floors, *rows], protocol, depth), ""]
    return Table(f"SDSSL {cfg.experiment_name}: {cfg.eval.data}", FINAL, rows,
                 ["paper k-NN", "paper linear"],
                 ["Final layer (class token after the final LayerNorm). k-NN: k=20, T=0.07. Linear: best base lr of "
                  "the grid, head of the last block. Deltas: SD minus its baseline. Paper columns: ImageNet, 300 epochs "
                  "(Table 1), ViT-S/16 unless the row names another."],
                 [*after, PAPER_MULTI_EXIT_TEXT])


def ablation(title: str, paper: dict):
    def declare(runs) -> Table:
        return Table(title, FINAL[:1], rows_beside_paper(runs, paper), ["paper k-NN"])
    return declare


DECLARATIONS = {
    "table5": ablation("Table 5: ablation (ImageNet k-NN, ViT-S/16, MoCo v3, 100 epochs)", PAPER_TABLE5),
    "table6": ablation("Table 6: head design (ImageNet k-NN, ViT-S/16, MoCo v3, 100 epochs)", PAPER_TABLE6),
    "fig9": ablation("Fig. 9: alpha / beta sweeps (ImageNet k-NN, ViT-S/16, SD-MoCo v3, 100 epochs; the paper "
                     "gives no values, only accuracy rising up to 1.0 for both, alpha mattering more)", {}),
}


def table(runs) -> Table:
    return DECLARATIONS.get(str(runs[0].cfg.experiment_name), comparison)(runs)


def render(overrides=()) -> str:
    return render_experiment(PAPER, overrides, table)


if __name__ == "__main__":
    render_cli(render)
