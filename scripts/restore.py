"""Restore the pinned outputs of dvc.yaml: pulled from the DVC remote, or rebuilt where it is missing.

    python scripts/restore.py [STAGE ...]        # or: make restore [STAGES="pretrain@bootleg ..."]

1. `dvc pull STAGE...` from the default remote (a local-directory remote that does not exist is
   not even tried).
2. If the remote is absent, unreachable or lacks files: one line says so, naming the remote and
   its url; empty directories the pull left behind are removed; then the stages and every stage
   they need are rebuilt with `dvc repro -s`, one at a time in pipeline order, each announced by
   a progress line with its expected time.
3. The rebuilt outputs are compared with the hashes dvc.lock pinned before the rebuild.

Without STAGE, every stage of dvc.yaml. Expected times are measurements, not guesses: the
training time (`train_time_s`) and evaluation wall times (`wall_time_s`) that the committed
result records in results/ carry, i.e. the pinned pipeline's own run on the hardware those
records name (`expected_seconds`). Stages without records (data, tables) have no expected time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
# Cached outputs that hold wall times, so that a rebuild never matches their pinned hash.
TIMED_OUTPUTS = ("done.json",)


def dvc(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    # stage commands run `python`: the interpreter running this script, even outside an activated venv
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([DVC, *args], cwd=ROOT, env=env, text=True, capture_output=capture)


def default_remote() -> tuple[str, str] | None:
    """(name, url) of the default remote, or None when none is configured."""
    name = dvc("remote", "default").stdout.strip()
    for line in dvc("remote", "list").stdout.splitlines():
        fields = line.split()
        if name and fields and fields[0] == name:
            return name, fields[1]
    return None


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def pull_failure(output: str) -> str:
    """What a failed `dvc pull` says about the remote, as a clause of one line."""
    if "Missing cache files" in output or "missing-files" in output:
        return "lacks some of the pinned files"
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    last = errors[0] if errors else (output.strip().splitlines() or ["no output"])[-1]
    return f"is unreachable ({last})"


class Pipeline:
    """Stages of dvc.yaml: dependencies and outputs, through dvc's own index."""

    def __init__(self):
        from dvc.repo import Repo

        with Repo(str(ROOT)) as repo:
            graph = repo.index.graph
            self.order = [stage.addressing for stage in repo.index.stages]
            self.needs = {s.addressing: {d.addressing for d in graph.successors(s)} for s in repo.index.stages}
            self.outs = {s.addressing: [(str(o.def_path), o.use_cache) for o in s.outs] for s in repo.index.stages}

    def closure(self, targets: list[str]) -> list[str]:
        """The targets and every stage they need, in an order dvc can run them one by one."""
        wanted, todo = set(), list(targets)
        while todo:
            stage = todo.pop()
            if stage not in wanted:
                wanted.add(stage)
                todo += self.needs[stage]
        ordered, done = [], set()
        while len(ordered) < len(wanted):
            for stage in self.order:
                if stage in wanted and stage not in done and self.needs[stage] <= done:
                    ordered.append(stage)
                    done.add(stage)
        return ordered


def remove_empty_dirs(paths: list[str]) -> list[str]:
    """Remove the empty directories among `paths` and their parents (what a failed pull leaves)."""
    candidates = set()
    for path in paths:
        p = ROOT / path
        while p != ROOT:
            candidates.add(p)
            p = p.parent
    removed = []
    for d in sorted(candidates, key=lambda p: len(p.parts), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            removed.append(str(d.relative_to(ROOT)))
    return removed


# --------------------------------------------------------------------------- expected times
def _records(*dirs: Path) -> list[dict]:
    records = []
    for d in dirs:
        for f in sorted(d.rglob("*.json")) if d.is_dir() else []:
            data = json.loads(f.read_text())
            if isinstance(data, dict) and "wall_time_s" in data:
                records.append(data)
    return records


def _training_seconds(records: list[dict]) -> float:
    """train_time_s once per trained run (every record of a run repeats it)."""
    per_run = {(r.get("paper"), r.get("run")): r["train_time_s"] for r in records if r.get("train_time_s")}
    return sum(per_run.values())


def run_config_hashes(runs: dict, scale: str, seed_runs: dict | None = None) -> dict[str, str]:
    """Config hash of each run of dvc_runs.yaml at `scale` (and of each of its `seed_runs`), as its
    pretrain (pretrain_seed) stage would train it."""
    from common.config import config_hash
    from common.launch import plan_runs
    from scripts.seeds import seed_spec

    hashes = {}
    for paper in sorted({r["paper"] for r in runs.values()}):
        hashes.update({spec.name: config_hash(spec.cfg) for spec in plan_runs(paper, [f"scale={scale}"])})
    for name, entry in (seed_runs or {}).items():
        hashes[name] = config_hash(seed_spec(entry["paper"], entry["base"], int(entry["seed_index"]), [f"scale={scale}"]).cfg)
    return hashes


def expected_seconds(stage: str, runs: dict, scale: str, results: Path, config_hashes: dict,
                     papers: dict | None = None) -> float | None:
    """Seconds the committed pipeline run spent on `stage`, from its result records; None if unknown.
    A run's records count only if they are of the run's current config (`config_hashes`);
    `papers` (of dvc_runs.yaml) names the experiment whose floors `floors@<paper>` makes."""
    from common.config import run_location
    from eval.records import CROSS, records_dir
    from eval.tables import floors_dir

    kind, _, run = stage.partition("@")
    kind = kind.removesuffix("_seed")  # a seed run's stages: `runs` and `config_hashes` hold the seed runs too
    if kind in ("pretrain", "eval"):
        paper = runs.get(run, {}).get("paper")
        if paper is None:
            return None
        where = run_location(paper, scale, run, results_root=results)
        own = [r for r in _records(records_dir(where)) if r.get("config_hash") == config_hashes.get(run)]
        if kind == "pretrain":
            return _training_seconds(own) or None
        cross = [r for r in _records(records_dir(where, CROSS)) if r.get("config_hash") == config_hashes.get(run)]
        return sum(r["wall_time_s"] for r in own + cross) or None
    if kind == "teachers":
        teachers = _records(results / "hybrid_distill" / "teachers")
        return (_training_seconds(teachers) + sum(r["wall_time_s"] for r in teachers)) or None
    if kind in ("floors", "floors_cross"):
        paper, experiment = (run, (papers or {}).get(run, {}).get("experiment")) if run else ("cross", "cross")
        floors = _records(floors_dir(results, paper, experiment, scale)) if experiment else []
        return sum(r["wall_time_s"] for r in floors) or None
    return None


def pinned_scale(lock: dict) -> str | None:
    for stage in lock.get("stages", {}).values():
        scale = stage.get("params", {}).get("params.yaml", {}).get("scale")
        if scale:
            return scale
    return None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "no measured time"
    return f"expected ~{round(seconds)} s" if seconds < 60 else f"expected ~{round(seconds / 60)} min"


# --------------------------------------------------------------------------- pinned hashes
def checked_outputs(stages: list[str], pipeline: Pipeline) -> list[str]:
    """The cached outputs of `stages` that a rebuild is compared on (not the ones holding wall times)."""
    return [path for s in stages for path, use_cache in pipeline.outs[s]
            if use_cache and Path(path).name not in TIMED_OUTPUTS]


def pinned_hashes(lock: dict, stages: list[str], pipeline: Pipeline) -> dict[str, str]:
    """md5 per checked output of `stages` that a dvc.lock pins."""
    checked = set(checked_outputs(stages, pipeline))
    hashes = {}
    for stage in stages:
        for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
            if out["path"] in checked:
                hashes[out["path"]] = out.get("md5")
    return hashes


def read_lock() -> dict:
    lock = ROOT / "dvc.lock"
    return yaml.safe_load(lock.read_text()) if lock.exists() else {}


def compare_with_pinned(pinned: dict[str, str], rebuilt: dict[str, str], checked: list[str]) -> int:
    unpinned = [p for p in checked if p not in pinned]
    if unpinned and pinned:  # e.g. a smoke rebuild against a mini lock: its run directories are other paths
        print(f"restore: dvc.lock pinned no hash for {', '.join(unpinned)} (a lock of another scale pins "
              "other run directories); not compared")
    if not pinned:
        print("restore: dvc.lock pinned none of these outputs before the rebuild; nothing to compare")
        return 0
    differ = [p for p in pinned if rebuilt.get(p) != pinned[p]]
    if not differ:
        print(f"restore: all {len(pinned)} rebuilt outputs match the hashes pinned in dvc.lock "
              f"(not compared: {', '.join(TIMED_OUTPUTS)} and the result records, which hold wall times)")
        return 0
    print(f"restore: {len(differ)} of {len(pinned)} rebuilt outputs differ from dvc.lock's pinned hashes: "
          + ", ".join(f"{p} (pinned {str(pinned[p])[:12]}, rebuilt {str(rebuilt.get(p))[:12]})" for p in differ)
          + "; dvc.lock now holds the rebuilt hashes (git diff dvc.lock)")
    return 1


def locate_remote() -> tuple[str, str | None]:
    """The default remote as "remote NAME (URL)", and why no pull is tried (None: try one)."""
    remote = default_remote()
    if remote is None:
        return "a default DVC remote", "is not configured"
    name, url = remote
    missing = is_local(url) and not Path(url.removeprefix("file://")).exists()
    return f"remote {name!r} ({url})", "does not exist" if missing else None


def expected_times(plan: list[str], lock: dict) -> dict[str, float | None]:
    """Measured seconds per stage, announced in one line with where they come from."""
    scale = yaml.safe_load((ROOT / "params.yaml").read_text())["scale"]
    if pinned_scale(lock) != scale:
        print(f"restore: no expected times: the committed records are of scale {pinned_scale(lock)}, "
              f"params.yaml asks for {scale}")
        return dict.fromkeys(plan)
    table = yaml.safe_load((ROOT / "dvc_runs.yaml").read_text())
    seeds = table.get("seed_runs") or {}
    runs = {**table["runs"], **seeds}
    hashes = run_config_hashes(table["runs"], scale, seeds)
    expected = {s: expected_seconds(s, runs, scale, ROOT / "results", hashes, table["papers"]) for s in plan}
    total = sum(filter(None, expected.values()))
    if total:
        print(f"restore: expected times are the committed scale-{scale} records' train_time_s and wall_time_s "
              f"(results/, on the hardware they name; {duration(total)} in all, "
              "without process start-up and dvc's hashing)")
    else:
        print("restore: no expected times: no committed record in results/ was made by these stages' current configs")
    return expected


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stages", nargs="*", help="stages of dvc.yaml, e.g. pretrain@bootleg (default: all)")
    args = p.parse_args(argv)
    pipeline = Pipeline()
    unknown = [s for s in args.stages if s not in pipeline.needs]
    if unknown:
        print(f"error: unknown stage(s) {unknown}; stages: {', '.join(pipeline.order)}", file=sys.stderr)
        return 2

    where, problem = locate_remote()
    if problem is None:
        pulled = dvc("pull", *args.stages)
        if pulled.returncode == 0:
            print(f"restore: pulled {' '.join(args.stages) or 'every stage'} from {where}; "
                  "dvc checked each file against the hash pinned in dvc.lock")
            return 0
        problem = pull_failure(pulled.stdout + pulled.stderr)

    plan = pipeline.closure(args.stages or pipeline.order)
    print(f"restore: {where} {problem}; rebuilding {len(plan)} stage(s) with dvc repro", flush=True)
    removed = remove_empty_dirs([path for s in plan for path, _ in pipeline.outs[s]])
    if removed:
        print(f"restore: removed empty directories left by a failed pull: {', '.join(removed)}")
    lock = read_lock()
    expected = expected_times(plan, lock)
    pinned = pinned_hashes(lock, plan, pipeline)
    for i, stage in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {stage} ({duration(expected[stage])})", flush=True)
        rebuilt = dvc("repro", "-s", stage, capture=False)
        if rebuilt.returncode:
            print(f"restore: `dvc repro -s {stage}` failed (exit {rebuilt.returncode}); the stages before "
                  "it are done, run the same command again to continue", file=sys.stderr)
            return rebuilt.returncode
    return compare_with_pinned(pinned, pinned_hashes(read_lock(), plan, pipeline), checked_outputs(plan, pipeline))


if __name__ == "__main__":
    sys.exit(main())
