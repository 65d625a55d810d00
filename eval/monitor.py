"""Monitors that read the live encoder during training the way evaluation reads an exported one.

* ``HealthHook``: RankMe (raw and centred; the progress bar and the collapse warning use the
  raw one), per-dimension std and mean pairwise cosine (``common.health``) of
  each monitored encoder (student and teacher for teacher-student methods: the method's
  ``monitored_encoders()``, ``common.method.Method``) on a fixed batch of unaugmented training images;
* ``KnnHook``: the k-NN protocol (``eval.knn.knn_classify``, eval's ``k``, ``T``, token and
  preprocessing) on a fixed class-balanced labelled subset of the eval dataset: the number
  equals ``eval.api.evaluate(..., "knn")`` with ``train_subset``/``val_subset`` set to the
  same sizes, and gives each run a learning curve in ``log.jsonl``;
* ``plot_knn_curves``: one PNG per paper and scale with the curves of its runs
  (``python -m eval.monitor runs/<paper>/<scale> [...]``).

The hooks are ``common.hooks`` training hooks: a paper config selects them with
``train.hooks: [eval.monitor:training_hooks]`` and their settings are ``train.health`` and
``train.knn_monitor``; ``common`` never imports ``eval``.

Cost, in image forward passes without gradient: ``probe_images`` x (monitored encoders) per
health measurement and ``train_images + test_images`` per k-NN measurement.
"""
from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.config import ConfigError
from common.health import health_metrics
from common.plots import pyplot, save_figure
from eval import features as F
from eval import settings
from eval.api import val_split_of
from eval.encoders import EvalEncoder
from eval.knn import knn_classify

KNN_KEY = "knn_online/top1"


def training_hooks(cfg) -> list:
    """The enabled monitors of ``cfg.train.health`` and ``cfg.train.knn_monitor``."""
    hooks = []
    if int(cfg.train.health.every) > 0:
        hooks.append(HealthHook(cfg))
    if int(cfg.train.knn_monitor.every) > 0:
        hooks.append(KnnHook(cfg))
    return hooks


# --------------------------------------------------------------------------- the live encoder
def live_encoder(method, model=None) -> EvalEncoder:
    """``model`` (default: the evaluated encoder) with the meta its export will carry (a
    ``common.method.Method``'s ``export_meta()`` holds the input size and statistics)."""
    model = model if model is not None else method.encoder_for_eval()
    return EvalEncoder(model, dict(method.export_meta()), "live", "encoder", model.arch)


@contextmanager
def eval_mode(module: torch.nn.Module):
    """``module`` in eval mode; every submodule gets its own previous mode back."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


@torch.no_grad()
def pooled_features(model, dataset, preprocess: F.Preprocess, token: str, batch_size: int) -> torch.Tensor:
    """``[N, D]`` float32 features of ``dataset`` as ``eval.features.extract_atoms`` computes them."""
    atom = F.Atom(token, int(model.depth))
    device = next(model.parameters()).device
    parts = []
    with eval_mode(model):
        for images, _ in F.iter_images(dataset, preprocess, batch_size):
            parts.append(F.compute_atoms(model, images.to(device), [atom])[atom].to("cpu", torch.float32))
    return torch.cat(parts)


# --------------------------------------------------------------------------- fixed images
@functools.lru_cache(maxsize=8)
def cached_dataset(data: str, split: str, root: str, subset: int | None, seed: int):
    """``common.data.get_dataset``, once per process (the monitors call it every few steps)."""
    from common.data import get_dataset

    return get_dataset(data, split, root=root, subset=subset, seed=seed)


def probe_subset(data: str, root: str, n: int, seed: int):
    """``n`` training images drawn once with ``seed`` (sorted indices), never augmented."""
    full = cached_dataset(data, "train", root, None, seed)
    if not 2 <= n <= len(full):
        raise ConfigError(f"train.health.probe_images={n}: choose 2..{len(full)} "
                          f"(the train split of {data} has {len(full)} images)")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    return full.subset(order[:n].sort().values)


def _eval_cfg(cfg, **overrides):
    user = OmegaConf.to_container(cfg.eval, resolve=True) if cfg.get("eval") is not None else {}
    return settings.resolve({**user, **overrides})


# --------------------------------------------------------------------------- hooks
class HealthHook:
    """Health of each monitored encoder on a fixed probe batch; warns once per encoder when
    its RankMe falls below ``collapse_fraction`` of its step-0 value.

    ``features(method) -> {name: [N, D]}`` replaces the probe-batch features (tests).
    """

    def __init__(self, cfg, features=None):
        h = cfg.train.health
        self.every = int(h.every)
        self.fraction = float(h.collapse_fraction)
        self.eval_cfg = _eval_cfg(cfg)
        c = self.eval_cfg
        self.images = probe_subset(str(c.data), str(c.root), int(h.probe_images), int(c.seed))
        self.features = features or self.probe_features
        self.warned: set[str] = set()
        self.postfix: dict[str, str] = {}

    def probe_features(self, method) -> dict[str, torch.Tensor]:
        c = self.eval_cfg
        out = {}
        for name, model in method.monitored_encoders().items():
            enc = live_encoder(method, model)
            pre = F.Preprocess(enc.meta, str(c.val_resize))
            out[name] = pooled_features(model, self.images, pre, F.resolve_token(enc, c.token), int(c.batch_size))
        return out

    def __call__(self, step: int, method, first: dict | None) -> dict[str, float]:
        values = {}
        for name, feats in self.features(method).items():
            values.update({f"health/{name}/{k}": v for k, v in health_metrics(feats).items()})
            key = f"health/{name}/rankme"
            self.postfix[key] = "rankme" if name == "encoder" else f"rankme_{name}"
            self.check_collapse(name, step, values[key], (first or {}).get(key))
        return values

    def check_collapse(self, name: str, step: int, value: float, initial: float | None) -> None:
        if initial is None or name in self.warned or value >= self.fraction * initial:
            return
        self.warned.add(name)
        from tqdm import tqdm

        tqdm.write(f"warning: collapse? the {name} encoder's RankMe is {value:.2f} at step {step}, "
                   f"below {self.fraction:g} x its step-0 value {initial:.2f} (train.health.collapse_fraction)",
                   file=sys.stderr)


class KnnHook:
    """Eval's k-NN top-1 (at ``knn.report_k``) of the evaluated encoder on a fixed
    class-balanced subset (``train.knn_monitor``), features computed as eval computes them."""

    postfix = {KNN_KEY: "knn"}

    def __init__(self, cfg):
        k = cfg.train.knn_monitor
        self.every = int(k.every)
        self.eval_cfg = c = _eval_cfg(cfg, train_subset=int(k.train_images), val_subset=int(k.test_images))
        try:
            self.train = cached_dataset(str(c.data), "train", str(c.root), int(c.train_subset), int(c.seed))
            self.val = cached_dataset(str(c.data), val_split_of(c), str(c.root), int(c.val_subset), int(c.seed))
        except ValueError as exc:
            raise ConfigError(f"train.knn_monitor.train_images={c.train_subset} / test_images={c.val_subset}: "
                              f"{exc}") from None
        if int(c.knn.report_k) not in [int(x) for x in c.knn.k]:
            raise ConfigError(f"eval.knn.report_k={c.knn.report_k} is not in eval.knn.k={list(c.knn.k)}")

    def __call__(self, step: int, method, first: dict | None) -> dict[str, float]:
        c = self.eval_cfg
        enc = live_encoder(method)
        pre = F.Preprocess(enc.meta, str(c.val_resize))
        token = F.resolve_token(enc, c.token)
        train = pooled_features(enc.model, self.train, pre, token, int(c.batch_size))
        val = pooled_features(enc.model, self.val, pre, token, int(c.batch_size))
        res = knn_classify(train, self.train.targets, val, self.val.targets, self.train.num_classes,
                           ks=list(c.knn.k), T=float(c.knn.T), chunks=int(c.knn.chunks))
        return {KNN_KEY: res[int(c.knn.report_k)]["top1"]}


# --------------------------------------------------------------------------- curves
def knn_curves(runs_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Run name -> (steps, online k-NN top-1) from ``<runs_dir>/<run>/log.jsonl``; a step
    logged twice (a resumed run) keeps its last value."""
    from common.hooks import monitor_records

    curves = {}
    for log in sorted(Path(runs_dir).glob("*/log.jsonl")):
        points = {r["step"]: r[KNN_KEY] for r in monitor_records(log) if KNN_KEY in r}
        if points:
            steps = sorted(points)
            curves[log.parent.name] = (steps, [points[s] for s in steps])
    return curves


def plot_knn_curves(runs_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """``<runs_dir>/knn_online.png`` (or ``out``): one curve per run; None without curves."""
    curves = knn_curves(runs_dir)
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run, (steps, values) in curves.items():
        ax.plot(steps, values, marker="o", markersize=3, label=run)
    ax.set_xlabel("training step")
    ax.set_ylabel("online k-NN top-1 (%)")
    ax.set_title("/".join(Path(runs_dir).parts[-2:]))  # <paper>/<scale>
    ax.legend(fontsize=7)
    return save_figure(fig, out or Path(runs_dir) / "knn_online.png", dpi=120)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eval.monitor",
                                     description="Plot the online k-NN curves of every run of a paper at one scale.")
    parser.add_argument("runs_dirs", nargs="+",
                        help="directories of the runs of one paper and scale each, e.g. runs/bootleg/mini")
    args = parser.parse_args(argv)
    for runs_dir in args.runs_dirs:
        path = plot_knn_curves(runs_dir)
        print(f"{runs_dir}: {path or 'no online k-NN in any log.jsonl'}")


if __name__ == "__main__":
    main()
