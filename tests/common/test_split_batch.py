"""Micro-batches of gradient accumulation: every tensor cut along its sample dimension."""
import pytest
import torch

from common.train import split_batch


def sample_ids(n, *shape):
    """A tensor whose every entry is the index of the sample it belongs to."""
    return torch.arange(n).view(n, *[1] * len(shape)).expand(n, *shape).clone()


def test_each_micro_batch_holds_the_same_samples_in_every_entry():
    B, M, clones = 6, 3, 2
    batch = {
        "images": sample_ids(B, 1, 4, 4),
        "context": sample_ids(B, 5).repeat_interleave(clones, 0),  # consecutive rows per sample
        "targets": sample_ids(B, 7).repeat_interleave(clones, 0).unsqueeze(0).expand(M, -1, -1),  # [M, B*c, Nt]
        "views": [sample_ids(B, 2), sample_ids(B, 2)],
        "shared": torch.arange(5),
        "step": torch.tensor(3),
        "name": "x",
    }
    micro = split_batch(batch, 3, B, {"targets": 1, "shared": None})
    for k, part in enumerate(micro):
        mine = {2 * k, 2 * k + 1}
        assert set(part["images"].flatten().tolist()) == mine and part["images"].shape[0] == 2
        assert part["context"].shape == (4, 5) and set(part["context"].flatten().tolist()) == mine
        assert part["targets"].shape == (M, 4, 7) and set(part["targets"].flatten().tolist()) == mine
        assert all(set(v.flatten().tolist()) == mine for v in part["views"])
        assert torch.equal(part["shared"], batch["shared"]) and part["step"] == 3 and part["name"] == "x"


def test_one_part_is_the_batch_itself():
    batch = {"images": torch.zeros(4, 2)}
    assert split_batch(batch, 1, 4)[0] is batch


def test_a_tensor_without_the_declared_sample_dimension_is_an_error():
    # targets [M=2, B=4, Nt]: split along dim 0 it would pair masks with the wrong images
    batch = {"images": torch.zeros(4, 3), "targets": torch.zeros(2, 4, 5, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"batch entry targets of shape \(2, 4, 5\) has 2 rows along dim 0.*"
                                         r"optim.accum_steps=2.*batch_dims"):
        split_batch(batch, 2, 4)
    with pytest.raises(ValueError, match="not divisible by optim.accum_steps=4"):
        split_batch(batch, 4, 6)
