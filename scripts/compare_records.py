"""Compare two trees of result records, e.g. a reproduction against the committed results.

    python scripts/compare_records.py results /path/to/clone/results [--tol 0.0]

Records are matched by their path relative to each root. For each pair it reports whether the
encoder (checkpoint sha256) and the protocol settings (eval_config_hash) are the same, and the
largest difference over the record's metrics. Exit status 1 if a metric differs by more than
``--tol`` (percentage points), or if a record exists on one side only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.records import load_records


def records(root: Path) -> dict[str, dict]:
    return {Path(r["_path"]).relative_to(root).as_posix(): r for r in load_records([root])}


def compare(a: dict, b: dict) -> dict:
    shared = sorted(set(a["metrics"]) & set(b["metrics"]))
    diffs = {k: abs(float(a["metrics"][k]) - float(b["metrics"][k])) for k in shared}
    worst = max(diffs, key=diffs.get) if diffs else None
    return {"same_encoder": a.get("checkpoint_sha256") == b.get("checkpoint_sha256"),
            "same_settings": a.get("eval_config_hash") == b.get("eval_config_hash"),
            "headline": (a["value"], b["value"]), "worst_metric": worst,
            "max_diff": diffs[worst] if worst else 0.0,
            "metrics_only_on_one_side": sorted(set(a["metrics"]) ^ set(b["metrics"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--tol", type=float, default=0.0, help="allowed difference per metric (points)")
    args = p.parse_args(argv)
    for root in (args.a, args.b):
        if not root.is_dir():
            print(f"error: {root} is not a directory of records", file=sys.stderr)
            return 2
    left, right = records(args.a), records(args.b)
    failed = False
    for name in sorted(set(left) | set(right)):
        if name not in left or name not in right:
            print(f"ONLY IN {'b' if name in right else 'a'}  {name}")
            failed = True
            continue
        c = compare(left[name], right[name])
        bad = c["max_diff"] > args.tol or c["metrics_only_on_one_side"]
        failed |= bool(bad)
        flags = ("" if c["same_encoder"] else " encoder-differs") + ("" if c["same_settings"] else " settings-differ")
        print(f"{'DIFF' if bad else 'same'}  {name}  {c['headline'][0]:.2f} vs {c['headline'][1]:.2f}  "
              f"max |diff| {c['max_diff']:.2f} ({c['worst_metric']}){flags}")
    print(f"{len(set(left) & set(right))} records compared, tolerance {args.tol} points: "
          f"{'differences found' if failed else 'all within tolerance'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
