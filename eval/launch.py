"""Evaluate one checkpoint with one or more protocols.

    python eval/launch.py checkpoint=PATH protocol=knn|linear|attentive|lowshot|finetune|analysis|segment|all
                          [out=DIR] [data=fashion_mnist] [any eval key, e.g. linear.epochs=5]
                          [cluster.partition=... (with --slurm)] [--slurm | --local] [--dry-run]

``checkpoint`` is an ``encoder.pt``, a run directory holding one, ``pixels`` or
``random:<encoder.pt | arch.json>`` (the two floor rows of every table). ``protocol`` may be a
comma-separated list. Records go to ``out`` (default: the run's ``results/<paper>/<scale>/<run>``
when a run directory's ``config.yaml`` is beside the encoder, else ``results/<paper>/<run>`` from
its meta; floors, which belong to no paper's table, to
``results/misc/floors-<data>-<scale>/<pixels | random-init-<init>>``, the one floor layout of
eval/tables.py). ``--slurm`` submits one job per protocol as a job array through
``common.launch``'s submitit executor.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from common.cli import OneLineArgumentParser, add_debug_flag, exit_interrupted, user_errors
from common.data import dataset_known
from common.errors import UserError
from eval import settings

EMPTY_HELP = {
    "checkpoint": "checkpoint= is empty: pass an encoder.pt, a run directory, pixels, or random:<encoder.pt|arch.json>",
    "protocol": "protocol= is empty: pass protocol=knn (a comma-separated list, or all), "
                "or leave protocol out for the default protocols",
    "out": "out= is empty: pass a directory for the records, or leave out= out for results/<paper>/<scale>/<run>",
}
CHECKPOINT_HELP = "checkpoint=PATH is required: an encoder.pt, a run directory, pixels, or random:<encoder.pt|arch.json>"


class EvalJob:
    """One (checkpoint, protocol) evaluation; picklable for submitit, requeues itself on timeout
    (the feature cache makes the restart cheap)."""

    def __init__(self, encoder: str, protocol: str, eval_cfg: dict, out_dir: str):
        self.encoder, self.protocol, self.eval_cfg, self.out_dir = encoder, protocol, eval_cfg, out_dir

    def __call__(self) -> list[dict]:
        from eval.api import evaluate

        return evaluate(self.encoder, self.protocol, self.eval_cfg, self.out_dir)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(EvalJob(self.encoder, self.protocol, self.eval_cfg, self.out_dir))


NO_PAPER = "misc"  # the results folder of encoders (and floors) that belong to no paper


def default_out_dir(spec: str, data: str, seed: int = 0, root: str = "results", stats: str | None = None,
                    scale: str = "mini") -> Path:
    """``stats``: the dataset whose normalisation a floor encoder takes, when ``data`` (which
    names the floors' folder) is not one of ``common.data``'s (a segmentation folder)."""
    from eval.encoders import load
    from eval.tables import PIXELS, floors_dir, random_floor_name

    floors = floors_dir(root, NO_PAPER, data.replace(":", "_").replace("/", "_"), scale)
    if spec == "pixels":
        return floors / PIXELS
    enc = load(spec, stats or data, seed=seed)
    if enc.kind == "random":
        out = floors / random_floor_name(enc.meta["init"])
        refuse_other_floor(out, enc.sha256)
        return out
    run_config = Path(spec) / "config.yaml" if Path(spec).is_dir() else Path(spec).with_name("config.yaml")
    if run_config.is_file():  # a run directory: the records of its run, as after its training
        from eval.records import records_dir

        return records_dir(OmegaConf.merge(OmegaConf.load(run_config), {"results_root": str(root)}))
    # an encoder from outside a run directory: no scale to file it under
    return Path(root) / str(enc.meta.get("paper") or NO_PAPER) / str(enc.meta.get("run") or enc.sha256[:12])


def refuse_other_floor(out: Path, sha256: str) -> None:
    """Stop before a random floor overwrites the records of another random encoder in its
    default folder (the same init, another architecture or seed)."""
    import json

    for record in sorted(out.glob("*.json")):
        other = json.loads(record.read_text()).get("checkpoint_sha256")
        if other not in (None, sha256):
            raise ValueError(f"{record} holds the record of another random encoder (sha256 {other[:12]}, this one "
                             f"{sha256[:12]}); pass out=<another directory> to keep both")


def parse(argv: list[str]):
    parser = OneLineArgumentParser(prog="python eval/launch.py", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true", help="submit through submitit to SLURM")
    where.add_argument("--local", action="store_true", help="run in this process (default)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_debug_flag(parser)
    parser.add_argument("overrides", nargs="*", help="key=value")
    args = parser.parse_intermixed_args(argv)
    special, eval_overrides, cluster_overrides = {}, [], []
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"argument {item!r} is not key=value (e.g. protocol=knn)")
        key, value = item.split("=", 1)
        if key in ("checkpoint", "protocol", "out"):
            if not value:
                parser.error(EMPTY_HELP[key])
            special[key] = value
        elif key.startswith("cluster."):
            cluster_overrides.append(item)
        else:
            eval_overrides.append(item)
    if "checkpoint" not in special:
        parser.error(CHECKPOINT_HELP)
    return args, special, eval_overrides, cluster_overrides


def cluster_config(cluster_overrides: list[str], folder: Path):
    from hydra import compose, initialize_config_dir

    from common.config import COMMON_CONFIGS

    with initialize_config_dir(config_dir=str(COMMON_CONFIGS), version_base="1.3"):
        cfg = compose(config_name=None, overrides=["+cluster=slurm", f"cluster.folder={folder}", *cluster_overrides])
    return cfg.cluster


def main(argv: list[str] | None = None) -> list[dict]:
    args, special, eval_overrides, cluster_overrides = parse(sys.argv[1:] if argv is None else argv)
    with user_errors("error", debug=args.debug, kinds=(KeyError, ValueError, FileNotFoundError)):
        user_cfg = OmegaConf.to_container(OmegaConf.from_dotlist(eval_overrides))
        cfg = settings.resolve(user_cfg)
        if not dataset_known(cfg.data):
            raise ValueError(f"data={cfg.data} is not a known dataset; e.g. data=fashion_mnist, "
                             "data=imagefolder:<path> (see common.data.get_dataset)")
        names = special.get("protocol") or ",".join(cfg.protocols)
        protocols = list(settings.IMAGE_PROTOCOLS) if names == "all" else [settings.check_protocol(p) for p in names.split(",")]
        if "out" in special:
            out = Path(special["out"])
        else:  # floors of a segmentation folder are filed under that folder
            data, stats = (f"seg:{cfg.seg.data}", "imagenet") if protocols == ["segment"] else (cfg.data, None)
            out = default_out_dir(special["checkpoint"], data, int(cfg.seed), stats=stats, scale=cfg.scale)
    if args.dry_run:
        print(f"# checkpoint {special['checkpoint']} -> {out}; protocols {protocols}")
        print(OmegaConf.to_yaml(cfg))
        if args.slurm:
            from common.launch import sbatch_preview

            print(f"# ---- sbatch parameters ({len(protocols)} protocol(s) as one job array)")
            print(sbatch_preview(cluster_config(cluster_overrides, out / "_jobs"), out / "_jobs" / "%j",
                                 len(protocols)))
        return []
    jobs = [EvalJob(special["checkpoint"], p, user_cfg, str(out)) for p in protocols]
    if args.slurm:
        from common.launch import make_executor

        executor = make_executor(cluster_config(cluster_overrides, out / "_jobs"), out / "_jobs" / "%j")
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        for job, sub in zip(jobs, submitted):
            print(f"submitted {job.protocol}: job {sub.job_id}, logs {sub.paths.stdout}", flush=True)
        records = [r for sub in submitted for r in sub.result()]
    else:
        try:
            records = [r for job in jobs for r in job()]
        except UserError as exc:
            sys.exit(f"error: {exc}")
        except KeyboardInterrupt:
            exit_interrupted(f"interrupted; the records of finished protocols are kept in {out}")
    for r in records:
        print(f"{r['protocol']:>9}  {r['metric']} = {r['value']:.2f}   ({r['wall_time_s']:.0f} s)  -> {out}/{r['protocol']}.json")
    return records


if __name__ == "__main__":
    main()
