"""The CLI every paper reuses: `python <paper>/launch.py [--slurm | --local] [--dry-run] [k=v ...]`.

An experiment (a table or a figure) is a set of runs (`cfg.runs`: name -> overrides). Each
run is one job: train (or resume) and then evaluate with every protocol of `cfg.eval`.
Jobs go in-process, through torchrun (several local processes), through submitit's local
or debug executors, or to SLURM as one job array. A SLURM job that reaches its time limit
or is preempted requeues itself and resumes from its run directory, which is named by the
run, never by the time.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from common.cli import OneLineArgumentParser, add_debug_flag, exit_interrupted, user_errors
from common.config import ConfigError, config_hash, group_names, load_config, paper_config_dir, split_override
from common.errors import UserError


@dataclass
class RunSpec:
    name: str
    overrides: list[str]
    cfg: DictConfig = field(repr=False)


def default_run_name(cfg: DictConfig) -> str:
    # no scale in a run's name: its directory has it (common.train.run_dir_of)
    return f"{cfg.method.name}-{config_hash(cfg)[:8]}"


def _refuse_conflicts(base: DictConfig, table: dict, overrides: list[str], groups: set[str]) -> None:
    """The run table decides what its runs are: a user override may change any value of every
    run, but not the name of a run nor the config group (method, model, ...) that a run selects."""
    experiment = base.experiment_name
    for o in overrides:
        key, value = split_override(o)
        if key == "run_name":
            raise ConfigError(f"{o} cannot rename the runs of experiment {experiment!r} (named by its "
                              f"runs table: {', '.join(table)}); pick runs with --only, or pass "
                              "runs=null for a single run of that name")
        if key not in groups:
            continue
        for name, run_overrides in table.items():
            pinned = [r for r in run_overrides or [] if split_override(r)[0] == key]
            if pinned and split_override(pinned[-1])[1] != value:
                raise ConfigError(f"{o} conflicts with run {name!r} of experiment {experiment!r}, which "
                                  f"selects {pinned[-1]}; drop {o}, or pass runs=null for a single run")


def _without_scale(name: str, names: list[str], scales: list[str]) -> str | None:
    """The run that an old scale-prefixed name (`mini-simclr`, `mini_hybrid_clip`) is now."""
    for scale in scales:
        for sep in "-_":
            rest = name.removeprefix(scale + sep)
            if rest != name and rest in names:
                return rest
    return None


def _selected(names: list[str], only: str | None, experiment: str, scales: list[str] = ()) -> list[str]:
    """The runs `--only a,b` keeps, in the experiment's order. `scales`: the paper's scale
    names, to point an old scale-prefixed run name to its new name."""
    if not only:
        return names
    wanted = only.split(",")
    unknown = [n for n in wanted if n not in names]
    renamed = {n: new for n in unknown if (new := _without_scale(n, names, scales))}
    if renamed:
        fixed = ",".join(renamed.get(n, n) for n in wanted)
        raise ConfigError(f"--only {only}: run names no longer carry the scale (a directory does: "
                          f"<train.out_root>/<paper>/<scale>/<run>); use --only {fixed}")
    if unknown:
        raise ConfigError(f"--only names unknown run(s) {unknown}; experiment {experiment!r} has: "
                          f"{', '.join(names)}")
    return [n for n in names if n in wanted]


def _scale_names(paper: str) -> list[str]:
    return sorted(p.stem for p in (paper_config_dir(paper) / "scale").glob("*.yaml"))


def plan_runs(paper: str, overrides: list[str], only: str | None = None) -> list[RunSpec]:
    """Expand the experiment selected by `overrides` into its runs (each fully resolved).

    A run's overrides from the experiment's table come first, the user's last, so a value
    given on the command line holds in every run. `only` ("a,b") keeps some runs.
    """
    base = load_config(paper, overrides, validate=False)  # the runs below are validated
    table = OmegaConf.to_container(base.runs, resolve=True) if base.get("runs") else {}
    if not table:
        name = base.run_name or default_run_name(base)
        _selected([name], only, base.experiment_name)
        return [RunSpec(name, [*overrides, f"run_name='{name}'"],
                        load_config(paper, [*overrides, f"run_name='{name}'"]))]
    _refuse_conflicts(base, table, overrides, group_names(paper))
    table = {name: table[name] for name in _selected(list(table), only, base.experiment_name, _scale_names(paper))}
    specs = []
    for name, run_overrides in table.items():
        full = [*(run_overrides or []), *overrides, f"run_name='{name}'"]
        try:
            specs.append(RunSpec(name, full, load_config(paper, full)))
        except ConfigError as exc:
            raise ConfigError(f"run {name!r} of experiment {base.experiment_name!r}: {exc}") from None
    return specs


# What runs after training on the main process: `after_train(cfg, summary) -> records`. The
# paper's launch.py passes eval's (`eval.api.evaluate_run`); common never imports eval.
AfterTrain = Callable[[DictConfig, dict], list]


STAGES = ("all", "train", "eval")


def _finished_run(cfg: DictConfig) -> dict:
    from common.train import run_dir_of
    done = run_dir_of(cfg) / "done.json"
    if not done.exists() or not (run_dir_of(cfg) / "encoder.pt").exists():
        raise ConfigError(f"--stage eval: run {cfg.run_name} has no finished encoder in {run_dir_of(cfg)}; "
                                "train it first (--stage train or --stage all)")
    return json.loads(done.read_text())


class TrainEvalJob:
    """One run: train (resuming if possible), then `after_train` (the evaluation). Picklable for
    submitit when `after_train` is a module-level function."""

    def __init__(self, paper: str, overrides: list[str], stage: str = "all", after_train: AfterTrain | None = None):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if stage == "eval" and after_train is None:
            raise ValueError("stage='eval' needs after_train (the evaluation), e.g. eval.api.evaluate_run")
        self.paper, self.overrides, self.stage, self.after_train = paper, list(overrides), stage, after_train

    def __call__(self) -> dict:
        from common import dist
        from common.train import train

        if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cfg = load_config(self.paper, self.overrides)
        if self.stage == "eval":
            summary = _finished_run(cfg)
        else:
            summary = train(cfg)
        if dist.is_main() and self.stage != "train" and self.after_train is not None:
            summary["records"] = len(self.after_train(cfg, summary))
        dist.cleanup()
        return summary

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on the pre-timeout/preemption signal: requeue the same run.

        The periodic checkpoints in the run directory hold the exact position, so the
        requeued job continues the same trajectory.
        """
        import submitit
        return submitit.helpers.DelayedSubmission(TrainEvalJob(self.paper, self.overrides, self.stage, self.after_train))


def executor_parameters(cluster: DictConfig) -> dict:
    """submitit parameters from the `cluster` config group."""
    params = {"timeout_min": int(cluster.timeout_min), "nodes": int(cluster.nodes),
              "tasks_per_node": int(cluster.tasks_per_node), "cpus_per_task": int(cluster.cpus_per_task),
              "mem_gb": float(cluster.mem_gb), "name": "ssl-vit"}
    if int(cluster.gpus_per_node):
        params["gpus_per_node"] = int(cluster.gpus_per_node)
    if cluster.executor == "slurm":
        params["slurm_signal_delay_s"] = int(cluster.signal_delay_s)
        params["slurm_array_parallelism"] = int(cluster.array_parallelism)
        for key in ("partition", "account", "qos", "constraint", "exclude"):
            if cluster.get(key):
                params[f"slurm_{key}"] = str(cluster[key])
        if cluster.get("additional"):
            params["slurm_additional_parameters"] = OmegaConf.to_container(cluster.additional)
    return params


def make_executor(cluster: DictConfig, folder: Path):
    import submitit
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster.executor,
                                     slurm_max_num_timeout=int(cluster.max_requeue)) \
        if cluster.executor == "slurm" else submitit.AutoExecutor(folder=str(folder), cluster=cluster.executor)
    executor.update_parameters(**executor_parameters(cluster))
    return executor


def sbatch_preview(cluster: DictConfig, folder: Path, n_jobs: int) -> str:
    """The #SBATCH header of `n_jobs` runs (one array), without submitting and without SLURM here."""
    from common.sbatch import sbatch_header
    return sbatch_header(executor_parameters(cluster), folder, n_jobs)


def _function_name(function: Callable) -> str:
    """`module:function` of a module-level function, for the command line of torchrun's workers."""
    return f"{function.__module__}:{function.__name__}"


def _function_named(name: str) -> Callable:
    module, function = name.split(":", 1)
    return getattr(importlib.import_module(module), function)


def _run_torchrun(paper: str, overrides: list[str], nproc: int, stage: str, after_train: AfterTrain | None) -> dict:
    hook = [f"--after-train={_function_name(after_train)}"] if after_train is not None else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "common.launch", "worker", f"--stage={stage}", *hook, paper, *overrides]
    subprocess.run(cmd, check=True)
    cfg = load_config(paper, overrides)
    from common.train import run_dir_of
    return json.loads((run_dir_of(cfg) / "done.json").read_text())


def submit(paper: str, specs: list[RunSpec], cluster: DictConfig, wait: bool = True,
           stage: str = "all", after_train: AfterTrain | None = None) -> list[dict]:
    """Send the runs to an executor; with several runs on SLURM they form one job array."""
    if cluster.executor == "inprocess":
        results = []
        for spec in specs:
            nproc = int(cluster.tasks_per_node) * int(cluster.nodes)
            results.append(_run_torchrun(paper, spec.overrides, nproc, stage, after_train) if nproc > 1
                           else TrainEvalJob(paper, spec.overrides, stage, after_train)())
        return results
    folder = Path(cluster.folder).absolute() / "%j"
    executor = make_executor(cluster, folder)
    jobs = []
    with executor.batch():
        for spec in specs:
            jobs.append(executor.submit(TrainEvalJob(paper, spec.overrides, stage, after_train)))
    for spec, job in zip(specs, jobs):
        print(f"submitted {spec.name}: job {job.job_id}, logs {job.paths.stdout}", flush=True)
    if not wait:
        return []
    results, failures = [], []
    for spec, job in zip(specs, jobs):
        try:
            # a multi-task job returns one summary per rank; rank 0's is the run's
            results.append(job.results()[0])
        except Exception as exc:  # submitit's FailedJobError: the job's traceback and log paths
            failures.append(f"run {spec.name} (job {job.job_id}) failed:\n{exc}\n"
                            f"  stderr log: {job.paths.stderr}\n  stdout log: {job.paths.stdout}")
    if failures:
        raise JobFailure("\n".join(failures))
    return results


class JobFailure(RuntimeError):
    pass


def build_parser(paper: str) -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog=f"python {paper.replace('.', '/')}/launch.py",
        description=f"Train and evaluate {paper} runs. Without arguments: the mini comparison.",
        epilog="Overrides are Hydra key=value pairs, e.g. experiment=table1 scale=smoke train.epochs=2")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true", help="submit to SLURM (one job array per table)")
    where.add_argument("--local", action="store_true", help="run here (the default)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config of every run (and sbatch parameters) and exit")
    p.add_argument("--no-wait", action="store_true", help="with --slurm: return after submitting")
    p.add_argument("--only", default=None, metavar="RUN[,RUN]",
                   help="run only these runs of the experiment (as named in its `runs`)")
    p.add_argument("--stage", choices=STAGES, default="all",
                   help="train, evaluate a finished run, or both (default)")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", help="key=value (anywhere on the line)")
    return p


def parse_args(paper: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Flags and key=value overrides in any order (`--only a train.threads=1` works)."""
    return build_parser(paper).parse_intermixed_args(argv)


# What prints the experiment's table once all its runs are done: `render_table(overrides)`, with
# the overrides the runs were planned from (experiment, scale, results_root...).
RenderTable = Callable[[list[str]], str | None]


def main(paper: str, argv: list[str] | None = None, after_train: AfterTrain | None = None,
         render_table: RenderTable | None = None) -> None:
    """The paper's CLI. `after_train(cfg, summary)` evaluates a finished run; `render_table(overrides)`
    gives the markdown printed once every run of the experiment is done."""
    args = parse_args(paper, argv)
    with user_errors(debug=args.debug):
        _main(paper, args, after_train, render_table)


def _main(paper: str, args: argparse.Namespace, after_train: AfterTrain | None,
          render_table: RenderTable | None) -> None:
    overrides = list(args.overrides)
    if args.slurm:
        overrides.append("cluster=slurm")
    elif args.local:
        overrides.append("cluster=local")
    specs = plan_runs(paper, overrides, args.only)
    cluster = specs[0].cfg.cluster
    experiment = specs[0].cfg.experiment_name
    if args.dry_run:
        for spec in specs:
            print(f"# ---- run {spec.name} (config hash {config_hash(spec.cfg)})")
            print(OmegaConf.to_yaml(spec.cfg, resolve=True))
        from common.cost import cost_report
        print(cost_report(specs))
        if cluster.executor == "slurm":
            print(f"# ---- sbatch parameters ({len(specs)} run(s) as one job array)")
            print(sbatch_preview(cluster, Path(cluster.folder) / "%j", len(specs)))
        return
    try:
        submit(paper, specs, cluster, wait=not args.no_wait, stage=args.stage, after_train=after_train)
    except (JobFailure, UserError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt as exc:
        exit_interrupted(str(exc) or "interrupted; relaunch the same command to resume")
    except Exception:
        if args.debug:
            raise
        traceback.print_exc()
        sys.exit(f"error: {paper} run failed (traceback above)")
    if args.no_wait or args.stage == "train" or experiment == "default":
        return  # a single run (experiment=none) has no table
    if args.only:
        # a table of some runs would be partial, and the floor rows that precede it are not
        # what the caller (dvc's eval@<run> stages) asked for
        print(f"ran {args.only} of {experiment}; render its table with "
              f"python {paper}/tables.py {shlex.join(args.overrides)}".rstrip(), flush=True)
        return
    table = render_table(overrides) if render_table is not None else None
    if table:
        print(table)


def _worker(argv: list[str]) -> None:
    """Entry of each torchrun process:
    `python -m common.launch worker [--stage=S] [--after-train=module:function] <paper> [k=v ...]`."""
    stage, after_train = "all", None
    if argv and argv[0].startswith("--stage="):
        stage, argv = argv[0].split("=", 1)[1], argv[1:]
    if argv and argv[0].startswith("--after-train="):
        after_train, argv = _function_named(argv[0].split("=", 1)[1]), argv[1:]
    paper, overrides = argv[0], argv[1:]
    TrainEvalJob(paper, overrides, stage, after_train)()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker(sys.argv[2:])
    else:
        sys.exit("usage: python -m common.launch worker <paper> [key=value ...]")
