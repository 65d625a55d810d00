"""Stratified random sampling and the projection of samples between crops."""
from __future__ import annotations

import pytest
import torch

from udi.srs import box_corners, grid_to_image, image_to_grid, project, sample_stratified, srs_maps


@pytest.mark.parametrize("grid, window, corner", [(14, 3, True), (14, 3, False), (6, 2, True), (7, 3, True), (5, 5, True)])
def test_exactly_one_sample_per_window(grid, window, corner):
    g = torch.Generator().manual_seed(0)
    pos = sample_stratified(64, grid, window, corner, generator=g)
    per_side = grid // window
    assert pos.shape == (64, per_side**2, 2)
    assert pos.min() >= 0 and pos.max() < grid
    slack = grid - per_side * window
    for b in range(64):
        rows, cols = pos[b, :, 0].tolist(), pos[b, :, 1].tolist()
        # some block offset puts every sample in its own window of the block (one per window)
        offsets = [(o_r, o_c) for o_r in range(slack + 1) for o_c in range(slack + 1)
                   if all(0 <= r - o_r < per_side * window and 0 <= c - o_c < per_side * window
                          for r, c in zip(rows, cols))
                   and len({((r - o_r) // window, (c - o_c) // window) for r, c in zip(rows, cols)}) == per_side**2]
        assert offsets, f"image {b}: samples {pos[b].tolist()} do not cover one window each"
        if corner:
            assert any(o_r in (0, slack) and o_c in (0, slack) for o_r, o_c in offsets)


def test_samples_cover_every_position_of_a_window():
    pos = sample_stratified(4000, 6, 2, generator=torch.Generator().manual_seed(1))
    assert set(map(tuple, pos[:, 0].tolist())) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # uniform in window 0


def random_boxes(n: int, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    h = torch.randint(8, H + 1, (n,), generator=g)
    w = torch.randint(8, W + 1, (n,), generator=g)
    i = (torch.rand(n, generator=g) * (H - h + 1)).long()
    j = (torch.rand(n, generator=g) * (W - w + 1)).long()
    return torch.stack([i, j, h, w], -1)


@pytest.mark.parametrize("flip_src, flip_tgt", [(False, False), (True, False), (False, True), (True, True)])
def test_projection_round_trip_with_flips(flip_src, flip_tgt):
    g = torch.Generator().manual_seed(0)
    H, W, S, T = 60, 90, 6, 14
    src = random_boxes(200, H, W, g)
    tgt = random_boxes(200, H, W, g)
    ul_s, br_s = box_corners(src, torch.full((200,), flip_src), torch.tensor([H, W]))
    ul_t, br_t = box_corners(tgt, torch.full((200,), flip_tgt), torch.tensor([H, W]))
    pos = torch.randint(0, S, (200, 9, 2), generator=g).double()
    u = grid_to_image(pos, S, ul_s, br_s)
    assert torch.allclose(image_to_grid(u, S, ul_s, br_s), pos)  # into the image and back
    t = image_to_grid(u, T, ul_t, br_t)  # into the target view ...
    back = image_to_grid(grid_to_image(t, T, ul_t, br_t), S, ul_s, br_s)  # ... and back
    assert torch.allclose(back, pos)


def test_flip_mirrors_columns_and_keeps_rows():
    box = torch.tensor([[10, 20, 41, 31]])
    hw = torch.tensor([101, 101])
    pos = torch.tensor([[[0.0, 0.0], [3.0, 6.0]]], dtype=torch.float64)
    u_plain = grid_to_image(pos, 7, *box_corners(box, torch.tensor([False]), hw))
    u_flip = grid_to_image(pos, 7, *box_corners(box, torch.tensor([True]), hw))
    assert torch.allclose(u_flip[..., 0], u_plain[..., 0])
    left, right = 20 / 100, 50 / 100
    assert torch.allclose(u_plain[0, :, 1], torch.tensor([left, right], dtype=torch.float64))
    assert torch.allclose(u_flip[0, :, 1], torch.tensor([right, left], dtype=torch.float64))


def test_positions_outside_the_other_view_are_invalid():
    hw = torch.tensor([100, 100])
    src = torch.tensor([[0, 0, 100, 100]])            # the whole image
    tgt = torch.tensor([[0, 0, 100, 50]])             # its left half
    pos = torch.tensor([[[5.0, 0.0], [5.0, 2.0], [5.0, 4.0], [5.0, 6.0]]])  # columns 0, 1/3, 2/3, 1 of the image
    p = project(pos, 7, *box_corners(src, torch.tensor([False]), hw), 14, *box_corners(tgt, torch.tensor([False]), hw))
    # strictly inside (0, 49/99) in columns: only 1/3 qualifies (0 is on the border)
    assert p.valid.tolist() == [[False, True, False, False]]
    assert torch.all(p.weight[~p.valid] == 0)
    # a flipped target covers the same region: same validity
    p_flip = project(pos, 7, *box_corners(src, torch.tensor([False]), hw), 14,
                     *box_corners(tgt, torch.tensor([True]), hw))
    assert torch.equal(p_flip.valid, p.valid)


def test_bilinear_weights_sum_to_one_and_interpolate_the_position():
    g = torch.Generator().manual_seed(3)
    B, H, W = 128, 80, 80
    boxes = torch.stack([random_boxes(B, H, W, g) for _ in range(4)], 1)  # 2 globals + 2 locals
    flips = torch.rand(B, 4, generator=g) < 0.5
    maps = srs_maps(boxes, flips, torch.tensor([H, W]), 14, 6, 3, 2, generator=g)
    for name in ("global", "local"):
        w, valid = maps[f"{name}_tgt_weight"], maps[f"{name}_valid"]
        assert valid.any() and (~valid).any()
        assert torch.allclose(w.sum(-1)[valid], torch.ones(int(valid.sum())))
        assert torch.all(w.sum(-1)[~valid] == 0)
        assert (w >= 0).all()
    # the weighted neighbour coordinates reproduce the continuous target position
    idx, w = maps["global_tgt_index"], maps["global_tgt_weight"]
    rows, cols = (idx // 14).double(), (idx % 14).double()
    ul, br = box_corners(boxes, flips, torch.tensor([H, W]))
    src_pos = torch.stack([maps["global_src"] // 14, maps["global_src"] % 14], -1).double()  # [B, 2, M, 2]
    for v in (0, 1):
        u = grid_to_image(src_pos[:, v], 14, ul[:, v], br[:, v])
        t = image_to_grid(u, 14, ul[:, 1 - v], br[:, 1 - v])
        ok = maps["global_valid"][:, v]
        interp = torch.stack([(rows[:, v] * w[:, v]).sum(-1), (cols[:, v] * w[:, v]).sum(-1)], -1)
        assert torch.allclose(interp[ok], t[ok].float().double(), atol=1e-5)


def test_map_shapes_and_shared_draws():
    B, n = 5, 3
    boxes = torch.tensor([[0, 0, 50, 50]]).expand(B, 2 + n, 4)
    maps = srs_maps(boxes, torch.zeros(B, 2 + n, dtype=torch.bool), torch.tensor([50, 50]), 14, 6, 3, 2,
                    generator=torch.Generator().manual_seed(0))
    assert maps["global_src"].shape == (B, 2, 16) and maps["global_tgt_index"].shape == (B, 2, 16, 4)
    assert maps["local_src"].shape == (B, n, 9) and maps["local_tgt_index"].shape == (B, n, 2, 9, 4)
    assert maps["local_valid"].shape == (B, n, 2, 9)
    # one draw per image for both globals and one shared by all locals
    assert torch.equal(maps["global_src"][:, 0], maps["global_src"][:, 1])
    assert all(torch.equal(maps["local_src"][:, 0], maps["local_src"][:, k]) for k in range(n))
    # identical crops: a sample projects onto itself (interior samples are valid, weight 1 on its own token)
    inner = maps["global_valid"]
    top = maps["global_tgt_weight"].argmax(-1, keepdim=True)
    own = maps["global_tgt_index"].gather(-1, top).squeeze(-1)
    assert torch.equal(own[inner], maps["global_src"][inner])


def test_window_larger_than_grid_fails_with_the_fix():
    with pytest.raises(ValueError, match="SRS window 5 is larger than the local token grid 4x4"):
        srs_maps(torch.zeros(1, 3, 4, dtype=torch.long) + torch.tensor([0, 0, 10, 10]), torch.zeros(1, 3, dtype=torch.bool),
                 torch.tensor([10, 10]), 7, 4, 3, 5)
    with pytest.raises(ValueError, match="udi.window_global <= 7"):
        sample_stratified(1, 7, 8, what="global ")
