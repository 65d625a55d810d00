"""The #SBATCH header of `--slurm --dry-run`, built without submitit (and so without SLURM).

Its agreement with the file submitit really submits is checked against the test cluster in
tests/slurm/test_slurm_e2e.py; these tests pin what the header says for given parameters.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from common.sbatch import memory, sbatch_header, sbatch_options

PARAMS = {"name": "ssl-vit", "timeout_min": 4320, "nodes": 2, "tasks_per_node": 8, "cpus_per_task": 10,
          "mem_gb": 480.0, "gpus_per_node": 8, "slurm_signal_delay_s": 120, "slurm_array_parallelism": 4,
          "slurm_partition": "gpu", "slurm_account": "my project",
          "slurm_additional_parameters": {"exclusive": True, "mail_type": "END"}}


def flags(header: str) -> dict[str, str | None]:
    out = {}
    for line in header.splitlines():
        assert line.startswith("#SBATCH --"), line
        key, _, value = line.removeprefix("#SBATCH --").partition("=")
        out[key] = value or None
    return out


def test_job_array_header_names_every_resource_and_the_requeue_signal(tmp_path):
    header = sbatch_header(PARAMS, tmp_path / "%j", n_jobs=9)
    got = flags(header)
    logs = f"{tmp_path}/%A_%a/%A_%a_0_log"
    assert got == {"array": "0-8%4", "job-name": "ssl-vit", "time": "4320", "nodes": "2", "ntasks-per-node": "8",
                   "cpus-per-task": "10", "mem": "480GB", "gpus-per-node": "8", "signal": "USR2@120",
                   "partition": "gpu", "account": "'my project'", "exclusive": None, "mail-type": "END",
                   "output": f"{logs}.out", "error": f"{logs}.err", "open-mode": "append", "wckey": "submitit"}
    keys = [line.split("=")[0] for line in header.splitlines()]
    assert keys == sorted(keys, key=lambda k: k.replace("-", "_"))  # submitit sorts its option names


def test_single_job_is_no_array_and_parallelism_never_exceeds_the_jobs():
    single = sbatch_options(PARAMS, "jobs/%j", n_jobs=1)
    assert "array" not in single and single["output"] == f"{Path.cwd()}/jobs/%j/%j_0_log.out"
    assert sbatch_options(PARAMS, "jobs/%j", n_jobs=3)["array"] == "0-2%3"
    defaults = sbatch_options({"name": "x"}, "jobs", n_jobs=300)
    assert defaults["array"] == "0-299%256" and defaults["signal"] == "USR2@90"


def test_memory_is_whole_gigabytes_or_megabytes():
    assert memory(8) == "8GB" and memory(7.5) == "7680MB" and memory(0.25) == "256MB"


def test_a_parameter_without_an_sbatch_option_is_refused():
    with pytest.raises(ValueError, match="slurm_gres"):
        sbatch_options({"slurm_gres": "gpu:1"}, "jobs", n_jobs=1)
