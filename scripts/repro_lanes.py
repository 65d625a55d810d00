"""`dvc repro` in parallel lanes: the changed stages of dvc.yaml, each run by its own command in
one of N worker processes with T torch threads, then recorded in dvc.lock with `dvc commit`.

Why: `dvc repro` runs one stage at a time, and a mini-scale stage (a ViT 128/6 on 28-px images)
does not keep two cores busy with two threads: two 1-thread processes get more done than one
2-thread process (BENCHMARKS.md, "Pipeline lanes"). What runs is what `dvc repro` would run: the
same stages (the changed ones and everything downstream of them, dependencies first), their
outputs removed first as DVC removes them, each stage's `cmd` in its working directory; only
the scheduling differs, and each stage is recorded by `dvc commit` once its command succeeded.
A stage planned only because an upstream stage runs is checked again once that one is recorded
and kept, not run, if its dependencies came out unchanged (as `dvc repro` does: a teacher
rebuilt bit for bit does not re-train the students).

    python scripts/repro_lanes.py                          # every changed stage, 2 lanes x 1 thread
    python scripts/repro_lanes.py 'pretrain_seed@*' --lanes 2 --threads 1   # those and their upstream
    python scripts/repro_lanes.py --dry-run                # the stages it would run, in order
    python scripts/repro_lanes.py --first 'teachers' --first '*@distill*'  # these (and their upstream) first, in that order
    # (a glob matching a table@ stage, e.g. '*@udi*', brings in all that the table needs)
    python scripts/repro_lanes.py --allow-missing          # in a clone without the DVC cache: what changed

A stage that fails stops the stages downstream of it (the others go on); its log is named at
the end, and the exit status is 1. Logs: `<log-dir>/<stage>.log` (default .dvc/tmp/lanes).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Plan:
    order: list[str]                     # the stages to run, in a dependency order
    needs: dict[str, set[str]]           # stage -> the planned stages it depends on
    cmds: dict[str, str] = field(default_factory=dict)
    wdirs: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # changed before anything ran
    restored: set[str] = field(default_factory=set)  # unchanged, run again for outputs that are missing


def plan(repo, targets: list[str], allow_missing: bool = False) -> Plan:
    """The stages `dvc repro <targets>` would run: the changed ones among the targets and their
    upstream stages, plus every selected stage downstream of a stage that runs.

    allow_missing (as `dvc repro --allow-missing`): a stage whose only change is that its outputs
    are absent (a clone without the DVC cache or remote) counts as done; it is rebuilt only where
    a stage that runs needs those outputs (Plan.restored)."""
    import networkx as nx

    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    stages = {s.addressing: s for s in graph.nodes if s.cmd}
    chosen = set(stages) if not targets else set()
    for pattern in targets:
        matched = {name for name in stages if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            raise SystemExit(f"error: no stage of dvc.yaml matches {pattern!r}; `dvc stage list` names them")
        for name in matched:
            chosen |= {name} | {s.addressing for s in nx.descendants(graph, stages[name]) if s.cmd}
    # dependencies first, and otherwise the order of dvc.yaml (as `dvc repro` lists them)
    position = {s: i for i, s in enumerate(repo.index.stages)}
    order = [s.addressing for s in nx.lexicographical_topological_sort(graph.reverse(), key=position.get)
             if s.cmd and s.addressing in chosen]
    upstream = {name: {s.addressing for s in graph.successors(stages[name]) if s.cmd} for name in order}
    with repo.lock:
        changed = {name for name in order
                   if stages[name].changed(allow_missing=allow_missing,
                                           upstream=[stages[u] for u in upstream[name]])}
        missing = {name for name in order if allow_missing and any(not out.exists for out in stages[name].outs)}
    run: set[str] = set()
    for name in order:
        if name in changed or upstream[name] & run:
            run.add(name)
    restored: set[str] = set()
    for name in reversed(order):  # downstream first, so a restored stage's own missing inputs follow
        if name in run or name in restored:
            restored |= {u for u in upstream[name] if u in missing and u not in run}
    run |= restored
    planned = [name for name in order if name in run]
    return Plan(planned, {name: upstream[name] & run for name in planned},
                {name: stages[name].cmd for name in planned}, {name: stages[name].wdir for name in planned},
                changed & run, restored)


def put_first(todo: Plan, patterns: list[str]) -> Plan:
    """The same plan with the stages matching `patterns`, and the planned stages they need, moved
    to the front, one pattern after the other: what should be done first when a pipeline may not
    finish in one sitting (e.g. one paper's stages, so its tables can be read before the rest).
    Each tier is closed under `needs` over what earlier tiers left, so a dependency order is kept."""
    order: list[str] = []
    for pattern in patterns:
        wanted = {n for n in todo.order if n not in order and fnmatch.fnmatchcase(n, pattern)}
        frontier = list(wanted)
        while frontier:
            for upstream in todo.needs[frontier.pop()] - wanted - set(order):
                wanted.add(upstream)
                frontier.append(upstream)
        order += [n for n in todo.order if n in wanted]
    order += [n for n in todo.order if n not in order]
    return Plan(order, todo.needs, todo.cmds, todo.wdirs, todo.changed, todo.restored)


def still_changed(dvc: str, root: str, name: str, allow_missing: bool = False) -> bool:
    """Whether the stage is still changed now that its upstream is recorded (`dvc status`, or with
    allow_missing DVC's own check that lets absent outputs pass)."""
    if allow_missing:
        repo, stage = fresh_stage(root, name)
        with repo.lock:
            return stage.changed(allow_missing=True, upstream=list(repo.index.graph.successors(stage)))
    status = subprocess.run([dvc, "status", "--json", name], cwd=root, capture_output=True, text=True)
    if status.returncode != 0:
        raise RuntimeError(f"`dvc status {name}` failed:\n{status.stderr}")
    return bool(json.loads(status.stdout or "{}"))


def fresh_stage(root: str, name: str):
    """The stage as dvc.yaml and dvc.lock say now (a new Repo: the planning one has cached them)."""
    from dvc.repo import Repo

    repo = Repo(root)
    return repo, next(s for s in repo.index.stages if s.addressing == name)


def outputs_match_lock(root: str, name: str) -> bool:
    repo, stage = fresh_stage(root, name)
    with repo.lock:  # by hash: a rebuilt output is not in the cache yet, which DVC's status calls a change
        return not any(out.changed_checksum() for out in stage.outs)


def remove_outs(repo, name: str) -> None:
    """Remove a stage's outputs as `dvc repro` does before running it (persistent ones stay)."""
    stage = next(s for s in repo.index.stages if s.addressing == name)
    with repo.lock:
        stage.remove_outs(ignore_remove=False, force=False)


def run_stage(name: str, cmd: str, wdir: str, threads: int, log_dir: Path) -> tuple[int, float, Path]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = log_dir / f"{name.replace('/', '_')}.log"
    start = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ {cmd}\n")
        out.flush()
        rc = subprocess.call(cmd, shell=True, cwd=wdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                             executable=shutil.which("bash") or "/bin/sh")
    return rc, time.monotonic() - start, log


def execute(repo, todo: Plan, lanes: int, threads: int, log_dir: Path, dvc: str, allow_missing: bool = False) -> int:
    """Run the planned stages in `lanes` workers; commit each success to dvc.lock, in turn."""
    log_dir.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    failed: dict[str, Path] = {}
    blocked: set[str] = set()
    pending = list(todo.order)
    results: queue.Queue = queue.Queue()
    running: set[str] = set()
    lock = threading.Lock()  # outputs are removed and dvc.lock written one stage at a time

    def worker(name: str) -> None:
        with lock:
            remove_outs(repo, name)
        results.put((name, *run_stage(name, todo.cmds[name], todo.wdirs[name], threads, log_dir)))

    while pending or running:
        for name in list(pending):
            if len(running) >= lanes:
                break
            if todo.needs[name] & (set(failed) | blocked):
                pending.remove(name)
                blocked.add(name)
                print(f"skip  {name}: a stage it depends on failed", flush=True)
            elif todo.needs[name] <= done:
                pending.remove(name)
                if name not in todo.changed | todo.restored:
                    with lock:
                        unchanged = not still_changed(dvc, repo.root_dir, name, allow_missing)
                    if unchanged:
                        done.add(name)
                        print(f"keep  {name}: its dependencies came out unchanged", flush=True)
                        continue
                running.add(name)
                print(f"start {name}", flush=True)
                threading.Thread(target=worker, args=(name,), daemon=True).start()
        if not running:
            if pending:  # cannot happen for a plan made by `plan`: say so rather than spin
                raise RuntimeError(f"stages waiting on stages outside the plan: {pending}")
            break
        name, rc, seconds, log = results.get()
        running.discard(name)
        if rc != 0:
            failed[name] = log
            print(f"FAIL  {name} (exit {rc}, {seconds:.0f} s): see {log}", flush=True)
            continue
        with lock:
            if name in todo.restored and not outputs_match_lock(repo.root_dir, name):
                print(f"note  {name}: rebuilt, but not to the outputs dvc.lock pinned (same torch thread "
                      f"count as its record?); the kept stages downstream of it are now out of date", flush=True)
            commit = subprocess.run([dvc, "commit", "--force", name], cwd=repo.root_dir, capture_output=True,
                                    text=True)
        if commit.returncode != 0:
            failed[name] = log
            print(f"FAIL  {name}: ran in {seconds:.0f} s, but `dvc commit` failed:\n{commit.stderr}", flush=True)
            continue
        done.add(name)
        print(f"done  {name} ({seconds:.0f} s)", flush=True)
    if failed or blocked:
        print(f"{len(done)} stages done, {len(failed)} failed ({', '.join(failed)}), "
              f"{len(blocked)} not run because of them", file=sys.stderr)
        return 1
    print(f"{len(done)} stages done or kept; dvc.lock records them")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", help="stage names or globs (default: every stage), as for dvc repro")
    p.add_argument("--lanes", type=int, default=2, help="stages run at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each stage (default 1)")
    p.add_argument("--log-dir", type=Path, help="default: .dvc/tmp/lanes of the repository")
    p.add_argument("--first", action="append", default=[], metavar="GLOB",
                   help="run the stages matching GLOB (and the planned stages they need) before the others; "
                        "repeated, in the order given")
    p.add_argument("--allow-missing", action="store_true",
                   help="a stage whose outputs are merely absent (no DVC cache or remote) counts as done; "
                        "it is rebuilt only where a stage that runs needs them")
    p.add_argument("--dry-run", action="store_true", help="print the stages that would run, in order")
    args = p.parse_args(argv)
    if args.lanes < 1 or args.threads < 1:
        raise SystemExit("error: --lanes and --threads take a positive count")
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    from dvc.repo import Repo

    repo = Repo()  # the DVC repository around the working directory, as for dvc repro
    log_dir = args.log_dir or Path(repo.root_dir) / ".dvc" / "tmp" / "lanes"
    todo = put_first(plan(repo, args.targets, args.allow_missing), args.first)
    for name in todo.order:
        if name in todo.restored:
            print(f"restore {name}: unchanged, but a stage that runs needs its missing outputs", file=sys.stderr)
    if args.dry_run or not todo.order:
        print("\n".join(todo.order) or "nothing to run: every selected stage is up to date")
        return 0
    print(f"{len(todo.order)} stages in {args.lanes} lanes x {args.threads} thread(s); logs in {log_dir}")
    return execute(repo, todo, args.lanes, args.threads, log_dir, dvc, args.allow_missing)


if __name__ == "__main__":
    sys.exit(main())
