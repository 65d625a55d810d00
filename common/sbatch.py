"""The `#SBATCH` header of a submission, written from our executor parameters.

`--slurm --dry-run` shows this header so that a user can read it on a laptop before copying the
repository to a cluster. submitit cannot write it there: its SLURM executor refuses to start
without `srun` on PATH. So the header is built here from the same parameters that
`common.launch.executor_parameters` hands to submitit, following the layout of the file submitit
writes (keys sorted, log paths, `%A_%a` for arrays, memory units); tests/slurm/test_sbatch_header.py
compares the two on a real submission.
"""
from __future__ import annotations

import shlex
from pathlib import Path

# submitit's defaults for what our parameters may leave unset
DEFAULT_SIGNAL_DELAY_S = 90
DEFAULT_ARRAY_PARALLELISM = 256
SUBMITIT_WCKEY = "submitit"
# the signal submitit's jobs catch to checkpoint and requeue before the time limit
TIMEOUT_SIGNAL = "USR2"

# our (submitit's generic) parameter name -> sbatch option
GENERIC_OPTIONS = {"name": "job_name", "timeout_min": "time", "mem_gb": "mem", "nodes": "nodes",
                   "tasks_per_node": "ntasks_per_node", "cpus_per_task": "cpus_per_task",
                   "gpus_per_node": "gpus_per_node"}
SITE_OPTIONS = ("partition", "account", "qos", "constraint", "exclude")


def memory(mem_gb: float) -> str:
    """Whole gigabytes as `<n>GB`, anything else in megabytes (sbatch takes integers only)."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def _flag(key: str, value) -> str:
    key = key.replace("_", "-")
    return f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}"


def sbatch_options(params: dict, folder: str | Path, n_jobs: int) -> dict:
    """sbatch option -> value for `n_jobs` jobs submitted together (several form one array).

    `params` are the executor parameters (`common.launch.executor_parameters`); `folder` is the
    job folder, usually ending in `%j`; logs land in it as `<job>_<task>_log.{out,err}`.
    """
    unknown = set(params) - set(GENERIC_OPTIONS) - {f"slurm_{k}" for k in SITE_OPTIONS} - {
        "slurm_signal_delay_s", "slurm_array_parallelism", "slurm_additional_parameters"}
    if unknown:
        raise ValueError(f"sbatch_options: no sbatch option for executor parameter(s) {sorted(unknown)}")
    options = {"job_name": "submitit", "time": 5, "nodes": 1, "wckey": SUBMITIT_WCKEY}
    for name, option in GENERIC_OPTIONS.items():
        if name in params:
            options[option] = memory(params[name]) if name == "mem_gb" else params[name]
    for key in SITE_OPTIONS:
        if params.get(f"slurm_{key}") is not None:
            options[key] = params[f"slurm_{key}"]
    options["signal"] = f"{TIMEOUT_SIGNAL}@{params.get('slurm_signal_delay_s', DEFAULT_SIGNAL_DELAY_S)}"
    log = str(Path(folder).expanduser().absolute() / "%j_%t_log")
    if n_jobs > 1:
        parallel = min(n_jobs, params.get("slurm_array_parallelism", DEFAULT_ARRAY_PARALLELISM))
        options["array"] = f"0-{n_jobs - 1}%{parallel}"
        log = log.replace("%j", "%A_%a")  # one log per array task
    options["output"] = log.replace("%t", "0") + ".out"
    options["error"] = log.replace("%t", "0") + ".err"
    options["open-mode"] = "append"  # a requeued job appends to its logs
    options.update(params.get("slurm_additional_parameters") or {})
    return options


def sbatch_header(params: dict, folder: str | Path, n_jobs: int) -> str:
    """The `#SBATCH` lines of the submission file, in submitit's order (sorted option names)."""
    options = sbatch_options(params, folder, n_jobs)
    return "\n".join(_flag(key, options[key]) for key in sorted(options))
