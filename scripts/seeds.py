"""Extra pretraining seeds of the headline runs: the `seed_runs` of dvc_runs.yaml.

Seed 0 of a run is the run itself (`bootleg`, unchanged); seed i >= 1 is `<run>-seed<i>`, the
same config with only `train.seed` moved by i. The training seed drives the initialisation, the
data order, each sample's augmentation, the masks and the per-step randomness (common/train.py),
and it is part of the config hash, so a seed run never resumes another seed's directory.

`--stage eval` evaluates a finished seed run with its paper's own eval settings, trimmed to
k-NN and the last-block linear probe (`eval.api.evaluate_seed_run`), into the seed run's records
directory `results/<paper>/<scale>/<run>-seed<i>/`: the cells of the paper tables that show
mean ± std over seeds (eval/tables.py).

    python scripts/seeds.py --run bootleg-seed1 scale=mini train.out_root=runs results_root=results
    python scripts/seeds.py --run bootleg-seed1 --stage eval scale=mini train.out_root=runs results_root=results
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# the runs of each paper's headline comparison (dvc_runs.yaml names)
HEADLINE_RUNS = {
    "bootleg": ("bootleg", "ijepa", "mae"),
    "sdssl": ("simclr", "sd_simclr", "byol", "sd_byol", "moco_v3", "sd_moco_v3"),
    "hybrid_distill": ("hybrid_clip", "distill_mae", "distill_clip", "distill_deit"),
    "udi": ("udi", "dino"),
}


def seed_run_name(run: str, index: int) -> str:
    return run if index == 0 else f"{run}-seed{index}"


def seed_runs(runs: dict, seeds: object) -> dict:
    """The dvc_runs.yaml entries of seeds 1 .. seeds-1 of every headline run."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SystemExit(f"params.yaml: seeds={seeds!r} is not a seed count; use 1 (the runs as they are) "
                         "or more (3 for the intervals of RESULTS.md)")
    table = {}
    for paper, names in HEADLINE_RUNS.items():
        for name in names:
            if runs.get(name, {}).get("paper") != paper:
                raise SystemExit(f"headline run {name!r} of {paper} is not a run of {paper}'s default "
                                 "experiment; update HEADLINE_RUNS in scripts/seeds.py")
            for index in range(1, seeds):
                table[seed_run_name(name, index)] = {**runs[name], "base": name, "seed_index": index}
    return table


def seed_spec(paper: str, base: str, index: int, overrides: list[str]):
    """The RunSpec of seed `index` of run `base`: its experiment's overrides, a single run
    (runs=null) renamed, and the base run's training seed + index."""
    from common.config import load_config, split_override
    from common.launch import RunSpec, plan_runs

    (spec,) = plan_runs(paper, overrides, only=base)
    name = seed_run_name(base, index)
    kept = [o for o in spec.overrides if split_override(o)[0] != "run_name"]
    full = [*kept, "runs=null", f"train.seed={int(spec.cfg.train.seed) + index}", f"run_name='{name}'"]
    return RunSpec(name, full, load_config(paper, full))


def seed_table() -> dict:
    """The `seed_runs` of dvc_runs.yaml."""
    return yaml.safe_load((REPO / "dvc_runs.yaml").read_text()).get("seed_runs") or {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Pretrain (or evaluate) one seed run of dvc_runs.yaml (seed_runs).")
    p.add_argument("--run", required=True, help="a key of seed_runs in dvc_runs.yaml, e.g. bootleg-seed1")
    p.add_argument("--stage", choices=("train", "eval"), default="train",
                   help="train: pretrain the seed; eval: the paper's k-NN and last-block linear probe on it")
    p.add_argument("overrides", nargs="*", help="key=value, as for <paper>/launch.py")
    args = p.parse_intermixed_args(argv)
    table = seed_table()
    if args.run not in table:
        print(f"error: --run {args.run!r} is not a seed run of dvc_runs.yaml; known: {', '.join(table) or 'none'} "
              "(set seeds in params.yaml and run python scripts/pipeline.py)", file=sys.stderr)
        return 2
    from common.cli import user_errors
    from common.launch import submit

    entry = table[args.run]
    with user_errors(debug=False):
        spec = seed_spec(entry["paper"], entry["base"], int(entry["seed_index"]), args.overrides)
        if args.stage == "train":
            submit(entry["paper"], [spec], spec.cfg.cluster, stage="train")
        else:
            from eval.api import evaluate_seed_run
            submit(entry["paper"], [spec], spec.cfg.cluster, stage="eval", after_train=evaluate_seed_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
