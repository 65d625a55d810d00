"""Targets and losses against formulas written out independently here."""
import pytest
import torch

from bootleg.loss import layer_weights, layerwise_loss, normalize_target, pixel_targets


def test_mse_with_equal_weights_is_the_mean_over_all_channels_of_all_layers():
    pred, target = torch.randn(3, 5, 4 * 8), torch.randn(3, 5, 4 * 8)
    total, per_layer = layerwise_loss(pred, target, layer_weights("equal", 4), "mse")
    expected = ((pred - target) ** 2).sum() / pred.numel()
    assert torch.allclose(total, expected, atol=1e-6)
    for k in range(4):
        chunk = slice(8 * k, 8 * (k + 1))
        assert torch.allclose(per_layer[k], ((pred[..., chunk] - target[..., chunk]) ** 2).mean())


def test_smooth_l1_matches_its_definition_and_weights_apply_per_layer():
    beta = 0.5
    pred, target = 2 * torch.randn(2, 7, 3 * 4), torch.randn(2, 7, 3 * 4)
    weights = [0.2, 0.3, 0.5]
    total, _ = layerwise_loss(pred, target, layer_weights(weights, 3), "smooth_l1", beta)
    expected = 0.0
    for k, w in enumerate(weights):
        d = (pred[..., 4 * k:4 * (k + 1)] - target[..., 4 * k:4 * (k + 1)]).abs()
        elem = torch.where(d < beta, 0.5 * d ** 2 / beta, d - 0.5 * beta)
        expected += w * elem.mean()
    assert torch.allclose(total, expected, atol=1e-6)


def test_l1_loss():
    pred, target = torch.randn(4, 6), torch.randn(4, 6)
    total, _ = layerwise_loss(pred, target, layer_weights("equal", 1), "l1")
    assert torch.allclose(total, (pred - target).abs().mean())


def test_loss_gradient_does_not_reach_the_target():
    pred = torch.randn(2, 3, 4, requires_grad=True)
    target = torch.randn(2, 3, 4, requires_grad=True)
    layerwise_loss(pred, target, layer_weights("equal", 1), "mse")[0].backward()
    assert pred.grad is not None and target.grad is None


def test_layer_norm_target_standardises_each_token_over_channels():
    h = 3 + 2 * torch.randn(2, 9, 16)
    y = normalize_target(h, "layer")
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    assert torch.allclose(y, (h - mean) / torch.sqrt(var + 1e-5), atol=1e-5)


def test_instance_norm_target_standardises_each_channel_over_the_tokens_of_an_image():
    h = 3 + 2 * torch.randn(2, 9, 16)
    y = normalize_target(h, "instance")
    mean = h.mean(1, keepdim=True)
    var = ((h - mean) ** 2).mean(1, keepdim=True)
    assert torch.allclose(y, (h - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    assert torch.equal(normalize_target(h, "none"), h)


def test_pixel_targets_are_patches_in_raster_order_normalised_per_patch():
    images = torch.randn(2, 3, 8, 12)
    raw = pixel_targets(images, 4, norm_pix=False)
    assert raw.shape == (2, 6, 4 * 4 * 3)
    # patch 4 = row 1, column 1 of the 2x3 grid; MAE's channel-last pixel order
    patch = images[1, :, 4:8, 4:8].permute(1, 2, 0).reshape(-1)
    assert torch.equal(raw[1, 4], patch)
    normed = pixel_targets(images, 4, norm_pix=True)[1, 4]
    assert torch.allclose(normed, (patch - patch.mean()) / torch.sqrt(patch.var() + 1e-6), atol=1e-5)


def test_bad_loss_settings_are_rejected():
    with pytest.raises(ValueError, match="method.loss='huber'"):
        layerwise_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), "huber")
    with pytest.raises(ValueError, match="method.target_norm='batch'"):
        normalize_target(torch.zeros(1, 2, 2), "batch")
    with pytest.raises(ValueError, match="give one weight per target layer"):
        layer_weights([1.0, 2.0], 3)
