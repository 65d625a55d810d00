"""Fine-tuning is a function of (seed, epoch, index / step), whatever the global RNGs hold."""
import json
import random

import numpy as np
import torch

from common.checkpoint import load_encoder
from eval.api import evaluate
from eval.features import SeededAugmentation
from tests.eval.conftest import TINY


def _scramble_global_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _draw_from_every_rng(image):
    return image + random.random() + float(np.random.rand()) + torch.rand(()).item()


def _global_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_states(a, b) -> bool:
    (py_a, np_a, t_a), (py_b, np_b, t_b) = a, b
    return (py_a == py_b and np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1])
            and np_a[2:] == np_b[2:] and torch.equal(t_a, t_b))


def test_seeded_augmentation_is_a_function_of_seed_epoch_index_and_leaves_global_rngs_alone():
    data = SeededAugmentation([(torch.zeros(()), 0)] * 4, _draw_from_every_rng, seed=3)
    data.set_epoch(1)
    outputs = []
    for prior in (0, 1):
        _scramble_global_rngs(prior)
        np.random.rand(), random.random(), torch.rand(())  # draws made before the sample
        before = _global_states()
        outputs.append([data[i][0] for i in range(4)])
        assert _same_states(before, _global_states())
    assert outputs[0] == outputs[1]
    assert len(set(outputs[0])) == 4  # each index has its own draw
    data.set_epoch(2)
    assert data[0][0] != outputs[0][0]


def test_finetune_with_every_augmentation_is_bit_reproducible(eval_cfg, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY))
    cfg = {**eval_cfg, "finetune": {**eval_cfg["finetune"], "mixup": 0.8, "cutmix": 1.0, "aug": "randaug",
                                    "reprob": 0.25, "drop_path": 0.1, "label_smoothing": 0.1}}
    runs = []
    for prior in (0, 1):  # what a fresh process, or earlier work in this one, left in the global RNGs
        _scramble_global_rngs(prior)
        out = tmp_path / f"run{prior}"
        c = {**cfg, "finetune": {**cfg["finetune"], "export_encoder": str(out / "encoder.pt")}}
        [rec] = evaluate(f"random:{arch}", "finetune", c, out)
        runs.append((rec["metrics"], load_encoder(out / "encoder.pt")[0].state_dict()))
    (metrics_a, weights_a), (metrics_b, weights_b) = runs
    assert metrics_a == metrics_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
