"""Figs. 4 and 5 render from the generators alone."""
from bootleg.figures import figure4, figure5


def test_figures_render_and_summarise_the_visibility(tmp_path):
    assert figure4(tmp_path, worker_batch=8, seeds=(0, 1), per_batch=2).read_bytes()[:4] == b"\x89PNG"
    path, summary = figure5(tmp_path, n_images=64, batch_sizes=(4, 32))
    assert path.read_bytes()[:4] == b"\x89PNG"
    # (min rate, max rate, mean context tokens) per (generator, batch)
    assert summary[("Bootleg", 4)][2] == summary[("Bootleg", 32)][2] == 49.0
    assert summary[("I-JEPA", 32)][2] < summary[("I-JEPA", 4)][2]
    assert summary[("I-JEPA", 4)][0] == 0.0  # the last row and column are never visible
