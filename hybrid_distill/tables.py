"""Render Hybrid Distill tables side by side with the paper: ``python hybrid_distill/tables.py [experiment ...]``.

Our numbers come from the evaluation records ``results/hybrid_distill/<run>/<protocol>.json``
(each carries checkpoint sha256, config hash, git commit, dataset hash, hardware). A row
without a record shows "—". COCO / ADE20K columns exist only in the paper column: this
repository has no detection / segmentation framework.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


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
MINI_PROTOCOLS = ("knn", "linear", "finetune")


def read_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    records = data if isinstance(data, list) else [data]
    return records[0] if records else None


def load_record(results_root: Path, run: str, protocol: str) -> dict | None:
    return read_record(Path(results_root) / PAPER / run / f"{protocol}.json")


def fmt(record: dict | None) -> str:
    return "—" if record is None else f"{record['value']:.1f}"


def provenance(records: list[dict | None]) -> str:
    rec = next((r for r in records if r), None)
    if rec is None:
        return ""
    return f"`{rec['checkpoint_sha256'][:10]}` cfg `{rec['config_hash'][:8]}`"


def render_mini(results_root: Path = Path("results")) -> str:
    lines = ["### Mini comparison (Fashion-MNIST, ViT 128/6/4 patch 4; top-1 %)", "",
             "| row | k-NN | linear | fine-tune | paper IN-1K fine-tune (Table 1 analogue) | checkpoint / config |",
             "|---|---|---|---|---|---|"]
    floors = [("raw pixels (floor)", "floor_pixels"), ("random init (floor)", "floor_random")]
    for label, run in floors:
        recs = [load_record(results_root, run, p) for p in MINI_PROTOCOLS]
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in recs) + " | | |")
    for run, (label, paper_row) in MINI.items():
        recs = [load_record(results_root, run, p) for p in MINI_PROTOCOLS]
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in recs) +
                     f" | {TABLE1[paper_row][2][0]} | {provenance(recs)} |")
    # Teachers (results/hybrid_distill/teachers.json: path + sha256) with their own records:
    # k-NN of the MAE / MoCo v3 runs, the training record of the supervised one.
    manifest = Path(results_root) / PAPER / "teachers.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else {}
    for name, entry in sorted(entries.items()):
        run = Path(entry["path"]).parent.name
        found = {p.stem: read_record(p) for p in (Path(results_root) / PAPER / "teachers").glob(f"*/{run}/*.json")}
        cells = [fmt(found[p]) if p in found else "" for p in MINI_PROTOCOLS]
        lines.append(f"| teacher '{name}' ({run}) | " + " | ".join(cells) + f" | | `{entry['sha256'][:10]}` |")
    return "\n".join(lines)


def render_paper_table(experiment: str, results_root: Path = Path("results")) -> str:
    if experiment == "table1":
        lines = ["### Table 1 (IN-1K fine-tune top-1; COCO / ADE20K only from the paper)", "",
                 "| row | backbone | paper IN-1K | ours IN-1K | paper AP^box | paper AP^mask | paper ADE20K |",
                 "|---|---|---|---|---|---|---|"]
        for run, (label, bb, (top1, box, mask, ade)) in TABLE1.items():
            ours = fmt(load_record(results_root, run, "finetune"))
            lines.append(f"| {label} | {bb} | {top1} | {ours} | {box} | {mask} | {ade} |")
        return "\n".join(lines)
    if experiment == "ade20k_linear":
        lines = ["### ADE20K (paper: UperNet fine-tuned 160k iterations; ours: linear probe on frozen patch tokens, "
                 "`protocol=segment`; different protocols)", "",
                 "| row | backbone | paper ADE20K mIoU (UperNet) | ours ADE20K mIoU (linear) |", "|---|---|---|---|"]
        for run, (label, bb, (_top1, _box, _mask, ade)) in TABLE1.items():
            ours = fmt(load_record(Path("results/ade20k_linear"), run, "segment"))
            lines.append(f"| {label} | {bb} | {ade} | {ours} |")
        return "\n".join(lines)
    if experiment.startswith("table2"):
        lines = ["### Table 2 (transfer fine-tune top-1)", "",
                 "| row | paper CIFAR100 | ours | paper Cars | ours | paper iNat19 | ours |", "|---|---|---|---|---|---|---|"]
        for run, (c100, cars, inat) in TABLE2.items():
            ours = [fmt(load_record(Path(f"results/table2_{ds}"), run, "finetune")) for ds in ("cifar100", "cars", "inat19")]
            lines.append(f"| {TABLE1[run][0]} ({TABLE1[run][1]}) | {c100} | {ours[0]} | {cars} | {ours[1]} | {inat} | {ours[2]} |")
        return "\n".join(lines)
    rows = ABLATIONS[experiment]
    lines = [f"### {experiment} (paper: COCO Mask R-CNN AP^box / AP^mask{' / ADE20K' if experiment == 'table9' else ''}; "
             "ours: IN-1K fine-tune top-1)", "", "| row | paper | ours IN-1K |", "|---|---|---|"]
    for run, (label, paper) in rows.items():
        lines.append(f"| {label} | {paper} | {fmt(load_record(results_root, run, 'finetune'))} |")
    return "\n".join(lines)


def render(experiment: str = "mini") -> str:
    """Markdown for one experiment (called by common.launch after the runs)."""
    if experiment == "mini":
        return render_mini()
    if experiment in ("table1", "ade20k_linear") or experiment.startswith("table2") or experiment in ABLATIONS:
        return render_paper_table(experiment)
    return f"(no table for experiment {experiment!r})"


if __name__ == "__main__":
    names = sys.argv[1:] or ["mini", "table1", "ade20k_linear", "table2", *ABLATIONS]
    print("\n\n".join(render(n) for n in names))
