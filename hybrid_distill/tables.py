"""Hybrid Distill tables beside the paper: ``python hybrid_distill/tables.py [experiment=mini] [key=value ...]``.

The overrides are the ones given to ``hybrid_distill/launch.py``; each experiment is one table
(``mini``, ``table1``, ``table2_cifar100`` ..., ``ade20k_linear``, the ablations ``table3`` ...).
Our numbers come from the runs' evaluation records, the floor rows from eval/tables.py. COCO /
ADE20K (UperNet) columns exist only in the paper column: this repository has no detection /
segmentation framework.
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.records import load_records
from eval.tables import Column, Row, Table, render_cli, render_experiment, rows_beside_paper

PAPER = "hybrid_distill"

# Paper numbers (spec Sec. 7). Table 1: IN-1K top-1, AP^box, AP^mask, ADE20K mIoU.
TABLE1 = {
    "b300_distill_deit": ("Distill-DeiT", "ViT-B", (82.0, 47.7, 42.1, 47.3)),
    "b300_distill_mae": ("Distill-MAE", "ViT-B", (83.7, 49.1, 43.1, 47.8)),
    "b300_distill_clip": ("Distill-CLIP", "ViT-B", (84.8, 49.5, 43.5, 50.3)),
    "b300_hybrid_deit": ("Hybrid Distill ⋆ (MAE+DeiT)", "ViT-B", (83.7, 50.3, 44.2, 49.1)),
    "b300_hybrid_clip": ("Hybrid Distill † (MAE+CLIP)", "ViT-B", (85.1, 50.6, 44.4, 51.5)),
    "l40_hybrid_clip": ("Hybrid Distill † (MAE+CLIP)", "ViT-L", (88.0, 54.6, 47.6, 56.3)),
    # the same paper row; CLIP-L/14's 16x16 token map resampled to 14x14 instead of a 196-px input
    "l40_hybrid_clip_interp": ("Hybrid Distill † (MAE+CLIP), token-map interpolation", "ViT-L",
                               (88.0, 54.6, 47.6, 56.3)),
}
TABLE2 = {  # CIFAR100, Cars, iNat19
    "b300_distill_deit": (91.2, 92.5, 78.3), "b300_distill_mae": (90.3, 93.1, 79.0),
    "b300_distill_clip": (91.6, 94.3, 81.6), "b300_hybrid_deit": (91.7, 94.1, 80.2),
    "b300_hybrid_clip": (92.0, 94.5, 81.9), "l40_hybrid_clip": (94.5, 95.6, 85.3),
}
TABLE2_DATASETS = ("table2_cifar100", "table2_cars", "table2_inat19")
# Ablations: COCO AP^box / AP^mask of 100-epoch ViT-B students.
ABLATIONS = {
    "table3": {"t3_tc": ("T_c(x)", "47.5 / 41.8"), "t3_tm": ("T_m(x)", "48.9 / 43.1"),
               "t3_tc_tcrel": ("T_c(x)+T'_c(x)", "46.8 / 41.5"), "t3_tm_tmrel": ("T_m(x)+T'_m(x)", "48.9 / 43.2"),
               "t3_tc_tmrel": ("T_c(x)+T'_m(x)", "50.0 / 43.9")},
    "table4": {"t4_tc": ("T_c(x)", "49.1 / 43.1"), "t4_tm": ("T_m(x)", "48.9 / 43.1"),
               "t4_tc_tcrel": ("T_c(x)+T'_c(x)", "49.1 / 43.2"), "t4_tc_tmrel": ("T_c(x)+T'_m(x)", "50.4 / 44.1"),
               "t4_tc_tmrel_mae_in100": ("T_c(x)+T'_m(x), MAE on IN-100", "49.5 / 43.5")},
    "table5": {"t5_feat_last": ("T^i_m ⋆ (features, last layer)", "47.7 / 42.1"),
               "t5_feat": ("T^i_m (features)", "49.6 / 43.5"), "t5_msa": ("MSA^i_m", "49.8 / 43.7"),
               "t5_relation": ("R^i_m (relation)", "50.0 / 43.9")},
    "table6": {"t6_feat": ("T^i_m (features)", "49.9 / 44.0"), "t6_msa": ("MSA^i_m", "50.1 / 44.0"),
               "t6_relation": ("R^i_m (relation)", "50.4 / 44.1")},
    "table7": {"t7_layers_1_11": ("1-11", "48.8 / 43.0"), "t7_layers_1_2_3": ("1,2,3", "47.4 / 41.9"),
               "t7_layers_5_6_7": ("5,6,7", "48.3 / 42.7"), "t7_layers_9_10_11": ("9,10,11", "49.8 / 43.7"),
               "t7_layers_10_11": ("10,11", "50.0 / 43.9"), "t7_layers_11": ("11", "49.2 / 43.3")},
    "table8": {"t8_none": ("No (100%)", "50.0 / 43.9"), "t8_random": ("Random (35%)", "49.2 / 43.3"),
               "t8_direct": ("Direct (35%)", "49.6 / 43.7"), "t8_progressive_k50": ("Progressive 13% (50%³)", "48.4 / 42.8"),
               "t8_progressive_k30": ("Progressive 34% (70%³)", "49.9 / 43.8"),
               "t8_progressive_k10": ("Progressive 73% (90%³)", "49.9 / 43.8")},
    "table9": {"b300_distill_deit": ("Distill-DeiT", "47.7 / 42.1 / 47.3"), "b300_distill_mae": ("Distill-MAE", "49.1 / 43.1 / 47.8"),
               "b300_distill_clip": ("Distill-CLIP", "49.5 / 43.5 / 50.3"), "fd_deit": ("FD-DeiT (not implemented)", "47.0 / 41.6 / 47.9"),
               "fd_mae": ("FD-MAE (not implemented)", "48.1 / 42.6 / 47.0"), "fd_clip": ("FD-CLIP (not implemented)", "49.2 / 43.3 / 50.5"),
               "dbot_deit": ("dBOT-DeiT (not implemented)", "47.5 / 41.9 / 47.9"), "dbot_mae": ("dBOT-MAE (not implemented)", "49.3 / 43.5 / 48.2"),
               "b300_hybrid_deit": ("Hybrid Distill ⋆", "50.3 / 44.2 / 49.1"), "b300_hybrid_clip": ("Hybrid Distill †", "50.6 / 44.4 / 51.5")},
    "table11": {"b300_distill_dino": ("Distill-DINO", "47.5 / 41.9"), "b300_distill_mae": ("Distill-MAE", "49.1 / 43.1"),
                "b300_hybrid_dino": ("Hybrid Distill (MAE+DINO)", "49.6 / 43.5")},
    "table12": {f"t12_{tc}_alpha{str(a).replace('.', '')}": (f"({'a' if tc == 'deit' else 'b'}) alpha={a}", v)
                for tc, vals in (("deit", ("47.5 / 41.8", "48.2 / 42.6", "49.3 / 43.4", "49.3 / 43.4", "49.5 / 43.5", "50.0 / 43.9")),
                                 ("clip", ("49.1 / 43.1", "49.9 / 43.8", "49.8 / 43.8", "50.1 / 43.9", "50.2 / 44.1", "50.4 / 44.1")))
                for a, v in zip((0.0, 0.1, 0.3, 0.5, 0.7, 1.0), vals)},
    "table13": {f"t13_{tc}_{m}_e{e}": (f"{'⋆' if tc == 'deit' else '†'} {m}, {e} ep", v)
                for tc, m, pair in (("deit", "none", ("50.0 / 43.9", "50.0 / 44.0")), ("deit", "progressive", ("49.9 / 43.8", "50.3 / 44.2")),
                                    ("clip", "none", ("50.4 / 44.1", "50.2 / 44.1")), ("clip", "progressive", ("50.2 / 43.9", "50.6 / 44.4")))
                for e, v in zip((100, 300), pair)},
}
# The mini rows and the Table 1 row each mirrors (paper IN-1K fine-tuning top-1).
MINI = {
    "distill_deit": ("Distill-DeiT (supervised teacher)", "b300_distill_deit"),
    "distill_mae": ("Distill-MAE", "b300_distill_mae"),
    "distill_clip": ("Distill-CLIP (MoCo v3 teacher)", "b300_distill_clip"),
    "hybrid_clip": ("Hybrid Distill † (MAE + MoCo v3)", "b300_hybrid_clip"),
}
FINETUNE = Column("IN-1K fine-tune top-1", "finetune")


def teacher_rows(results_root: Path) -> list[Row]:
    """A row per teacher of the manifest (``teachers.json``: path, sha256, build command) with the
    records of that very encoder, found by its sha256 among the records its build commands file
    under ``<results_root>/hybrid_distill/teachers/``: those that evaluated it, or the fine-tuning
    that produced it (the supervised teacher; its record names the encoder it exported)."""
    manifest = results_root / PAPER / "teachers.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else {}
    records = load_records([results_root / PAPER / "teachers"]) if entries else []
    return [Row(f"teacher '{name}' ({Path(entry['path']).parent.name})",
                {r["protocol"]: r for r in records
                 if entry["sha256"] in (r.get("checkpoint_sha256"), r.get("exported_sha256"))})
            for name, entry in sorted(entries.items())]


def mini(runs) -> Table:
    cfg = runs[0].cfg
    columns = [Column({"knn": "k-NN", "linear": "linear", "finetune": "fine-tune"}.get(p, p), p) for p in cfg.eval.protocols]
    paper = {run: (label, [str(TABLE1[row][2][0])]) for run, (label, row) in MINI.items()}
    return Table(f"Mini comparison ({cfg.eval.data}; top-1 %)", columns,
                 [*rows_beside_paper(runs, paper), *teacher_rows(Path(str(cfg.results_root)))],
                 ["paper IN-1K fine-tune (Table 1 analogue)"])


def table1(runs) -> Table:
    paper = {run: (f"{label} ({backbone})", [str(v) for v in numbers]) for run, (label, backbone, numbers) in TABLE1.items()}
    return Table("Table 1 (IN-1K fine-tune top-1; COCO / ADE20K only from the paper)", [FINETUNE],
                 rows_beside_paper(runs, paper), ["paper IN-1K", "paper AP^box", "paper AP^mask", "paper ADE20K"])


def ade20k(runs) -> Table:
    paper = {run: (f"{label} ({backbone})", [str(numbers[3])]) for run, (label, backbone, numbers) in TABLE1.items()}
    return Table("ADE20K (paper: UperNet fine-tuned 160k iterations; ours: linear probe on frozen patch tokens, "
                 "`protocol=segment`; different protocols)", [Column("ADE20K mIoU (linear)", "segment")],
                 rows_beside_paper(runs, paper), ["paper ADE20K mIoU (UperNet)"])


def table2(runs) -> Table:
    experiment = str(runs[0].cfg.experiment_name)
    column = TABLE2_DATASETS.index(experiment)
    paper = {run: (f"{TABLE1[run][0]} ({TABLE1[run][1]})", [str(values[column])]) for run, values in TABLE2.items()}
    return Table(f"Table 2, {experiment.removeprefix('table2_')} (transfer fine-tune top-1)",
                 [Column("fine-tune top-1", "finetune")], rows_beside_paper(runs, paper), ["paper"])


def ablation(runs) -> Table:
    experiment = str(runs[0].cfg.experiment_name)
    paper = {run: (label, [value]) for run, (label, value) in ABLATIONS[experiment].items()}
    return Table(f"{experiment} (paper: COCO Mask R-CNN AP^box / AP^mask{' / ADE20K' if experiment == 'table9' else ''}; "
                 "ours: IN-1K fine-tune top-1)", [FINETUNE], rows_beside_paper(runs, paper), ["paper"])


def table(runs) -> Table:
    experiment = str(runs[0].cfg.experiment_name)
    if experiment in ABLATIONS:
        return ablation(runs)
    if experiment in TABLE2_DATASETS:
        return table2(runs)
    return {"table1": table1, "ade20k_linear": ade20k}.get(experiment, mini)(runs)


def render(overrides=()) -> str:
    return render_experiment(PAPER, overrides, table)


if __name__ == "__main__":
    render_cli(render)
