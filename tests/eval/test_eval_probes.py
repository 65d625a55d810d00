import pytest
import torch
import torch.nn.functional as F

from eval.attentive import build_probe
from eval.heads import CachedBatches, HeadSpec, LinearHead, load_probe, save_probe, train_grid
from eval.lowshot import fit_logreg


def separable(n, d=16, classes=4, seed=0, tokens=None):
    g = torch.Generator().manual_seed(seed)
    means = 4.0 * torch.randn(classes, d, generator=torch.Generator().manual_seed(123))
    y = torch.arange(n) % classes
    shape = (n, d) if tokens is None else (n, tokens, d)
    noise = torch.randn(shape, generator=g)
    x = noise + (means[y] if tokens is None else means[y].unsqueeze(1))
    return x, y


def train_linear(xtr, ytr, xva, yva, shuffle=False, epochs=10):
    if shuffle:  # labels independent of the features: no signal to learn
        ytr = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(9))]
        yva = yva[torch.randperm(len(yva), generator=torch.Generator().manual_seed(10))]
    specs = [HeadSpec(f"x/lr{lr}", "x", lr) for lr in (0.05, 0.5)]
    torch.manual_seed(0)
    heads = {s.name: LinearHead(xtr.shape[1], 4) for s in specs}
    res = train_grid(heads, specs, CachedBatches({"x": xtr}, ytr, 64), {"x": xva}, yva, epochs=epochs)
    return res, heads, specs


def test_linear_grid_separable_reaches_full_accuracy_and_shuffled_is_chance():
    xtr, ytr = separable(800)
    xva, yva = separable(400, seed=1)
    res, _, _ = train_linear(xtr, ytr, xva, yva)
    assert all(r["top1"] >= 98.0 for r in res.values()), res
    shuffled, _, _ = train_linear(xtr, ytr, xva, yva, shuffle=True)
    assert all(r["top1"] < 40.0 for r in shuffled.values()), shuffled  # chance = 25%, sd ~2.2%


def test_grid_heads_are_independent_of_each_other():
    """Training two heads together gives exactly the weights of training each alone."""
    xtr, ytr = separable(256)
    xva, yva = separable(64, seed=1)
    specs = [HeadSpec("a", "x", 0.1), HeadSpec("b", "x", 0.7)]
    torch.manual_seed(0)
    together = {s.name: LinearHead(16, 4) for s in specs}
    init = {k: {n: p.clone() for n, p in h.state_dict().items()} for k, h in together.items()}
    train_grid(together, specs, CachedBatches({"x": xtr}, ytr, 32), {"x": xva}, yva, epochs=2)
    alone = LinearHead(16, 4)
    alone.load_state_dict(init["b"])
    train_grid({"b": alone}, specs[1:], CachedBatches({"x": xtr}, ytr, 32), {"x": xva}, yva, epochs=2)
    assert torch.allclose(alone.linear.weight, together["b"].linear.weight, atol=1e-6)


@pytest.mark.parametrize("kind", ["vjepa", "aim"])
def test_attentive_probe_separable_tokens_and_shuffled_labels(kind):
    xtr, ytr = separable(512, tokens=6)
    xva, yva = separable(256, seed=1, tokens=6)

    def fit(ytrain, yval):
        torch.manual_seed(0)
        probe = build_probe(kind, 16, 4, num_heads=2)
        spec = HeadSpec(kind, "t", 1e-2, 0.01)
        return train_grid({kind: probe}, [spec], CachedBatches({"t": xtr}, ytrain, 64), {"t": xva}, yval,
                          epochs=6, optimizer="adamw")[kind]["top1"]

    assert fit(ytr, yva) >= 98.0
    g = torch.Generator().manual_seed(3)
    assert fit(ytr[torch.randperm(512, generator=g)], yva[torch.randperm(256, generator=g)]) < 40.0


def test_vjepa_probe_structure_and_errors():
    probe = build_probe("vjepa", 16, 3, num_heads=4)
    assert probe.query.shape == (1, 1, 16)
    assert probe(torch.randn(2, 5, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"patch tokens \[B, n, 16\]"):
        probe(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="vjepa or aim"):
        build_probe("mlp", 16, 3, 4)
    with pytest.raises(ValueError, match="not divisible"):
        build_probe("aim", 16, 3, 5)


def test_saved_probe_rejects_features_of_wrong_dimension(tmp_path):
    head = LinearHead(24, 5, bn=True)
    path = save_probe(tmp_path / "p.pt", head, "cls_last4", {"bn": True})
    loaded, feature = load_probe(path)
    assert feature == "cls_last4"
    x = torch.randn(3, 24)
    head.eval()
    assert torch.allclose(loaded(x), head(x))
    with pytest.raises(ValueError, match="expects 24-dim features but got 16-dim"):
        loaded(torch.randn(3, 16))
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a saved probe"):
        load_probe(tmp_path / "bad.pt")


def test_logreg_penalty_matches_cyanure_objective():
    """C = 1/lambda in scikit-learn minimises mean CE + (lambda/N)/2 ||W||^2 (cyanure's lambd/N)."""
    x, y = separable(60, d=5, classes=3)
    x = F.normalize(x, dim=1).double()
    lam, n = 1.0, len(x)
    W_sk = fit_logreg(x, y, lam)
    W = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ W.T, y) + (lam / n) / 2 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # the multinomial softmax is invariant to a shared shift of the rows; the L2 penalty picks
    # the zero-mean solution in both, so the weights themselves agree
    assert torch.allclose(W_sk, W.detach(), atol=1e-3), (W_sk, W)
    with pytest.raises(ValueError, match="positive"):
        fit_logreg(x, y, 0.0)


def test_probe_records_are_identical_across_processes(tiny_encoder, eval_cfg, tmp_path):
    """torch seeds each process at random; every probe must seed before it draws weights."""
    import json
    import subprocess
    import sys

    # one process per repetition runs all three probes: the check is across processes, and
    # each interpreter start costs seconds
    cfg = {**eval_cfg, "cache_dir": None, "train_subset": 400, "val_subset": 120}
    script = ("import json, sys; from eval.api import evaluate; "
              "print(json.dumps({p: evaluate(sys.argv[1], p, json.loads(sys.argv[2]), out_dir=sys.argv[3] + p)[0]['metrics'] "
              "for p in ('linear', 'attentive', 'lowshot')}, sort_keys=True))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", script, str(tiny_encoder), json.dumps(cfg),
                                       str(tmp_path / f"run{i}-")], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1])
            for i in range(2)]
    for protocol in ("linear", "attentive", "lowshot"):
        assert runs[0][protocol] == runs[1][protocol], protocol
