"""The GPU job shape of a paper recipe belongs to its paper scale, not to an experiment: a
smoke or mini run of any experiment stays one local process, and every experiment at paper
scale on SLURM gets the shape its paper scale declares."""
from pathlib import Path

import pytest

from common.config import load_config
from common.papers import discover_papers

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = [(paper, path.stem) for paper in discover_papers(REPO)
               for path in sorted((REPO / paper / "configs" / "experiment").glob("*.yaml"))]
SHAPE = ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")


def shape(cluster) -> dict:
    return {key: cluster[key] for key in SHAPE}


@pytest.mark.parametrize("paper, experiment", EXPERIMENTS)
def test_small_scales_run_in_one_local_process(paper, experiment):
    for scale in ("smoke", "mini"):
        # unvalidated: a paper-size model at a small scale is refused (e.g. a 1x1 patch grid);
        # the job shape is what is checked here
        cluster = load_config(paper, [f"experiment={experiment}", f"scale={scale}"], validate=False).cluster
        assert (cluster.nodes, cluster.tasks_per_node, cluster.gpus_per_node) == (1, 1, 0), (scale, shape(cluster))


@pytest.mark.parametrize("paper, experiment", EXPERIMENTS)
def test_paper_scale_on_slurm_takes_the_job_shape_of_the_paper_scale(paper, experiment):
    want = shape(load_config(paper, ["scale=paper", "cluster=slurm"]).cluster)
    assert want["gpus_per_node"] > 0
    # unvalidated: this test is about job shapes; validation has tests of its own
    got = shape(load_config(paper, [f"experiment={experiment}", "scale=paper", "cluster=slurm"],
                            validate=False).cluster)
    assert got == want
