"""Where the teachers that this repository trains are: the manifest ``teachers.json``.

The mini (and smoke) teachers are runs of the other papers and a supervised fine-tune from
eval/. ``scripts/build_teachers.py`` (the ``teachers`` stage of dvc.yaml) trains them and writes
``<results_root>/hybrid_distill/teachers.json``: per role, the encoder's ``path``, ``sha256``,
the ``scale`` it was built for and the ``build`` command. Hybrid Distill only reads it: a
teacher of kind ``encoder`` whose config leaves ``path`` null takes path and sha256 from there;
an explicit ``teachers.<role>.path`` is used as given.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.checkpoint import sha256_file
from common.errors import UserError

PAPER = "hybrid_distill"
DEFAULT_ROOTS = {"train.out_root": "runs", "results_root": "results"}


class MissingTeacherError(UserError, FileNotFoundError):
    """A teacher encoder a run needs is not there (or is not the one the manifest records)."""


def manifest_path(results_root) -> Path:
    return Path(str(results_root)) / PAPER / "teachers.json"


def read_manifest(results_root) -> dict[str, dict]:
    path = manifest_path(results_root)
    return json.loads(path.read_text()) if path.is_file() else {}


def build_hint(scale: str, out_root=DEFAULT_ROOTS["train.out_root"],
               results_root=DEFAULT_ROOTS["results_root"]) -> str:
    """The command that builds the teachers of `scale` where a run with these roots looks for them."""
    roots = {"train.out_root": str(out_root), "results_root": str(results_root)}
    extra = "".join(f" {key}={value}" for key, value in roots.items() if value != DEFAULT_ROOTS[key])
    return f"run `dvc repro teachers` or `python scripts/build_teachers.py scale={scale}{extra}`"


def resolve_encoder_teacher(name: str, spec: dict, scale: str, out_root, results_root) -> dict:
    """`spec` (a ``teachers.<name>`` entry of kind ``encoder``) with the path and sha256 of the
    encoder it names: its own ``path``, or the manifest's entry when ``path`` is null.

    Raises MissingTeacherError, naming the command that builds the teacher, when the entry, the
    file, or a file with the recorded sha256 is missing; nothing is loaded.
    """
    fix = build_hint(scale, out_root, results_root)
    if spec.get("path"):
        if not Path(spec["path"]).is_file():
            raise MissingTeacherError(f"teachers.{name}.path={spec['path']} does not exist; point it to an "
                                      f"encoder.pt, or set it to null for the built teachers ({fix})")
        return spec
    manifest = manifest_path(results_root)
    entry = read_manifest(results_root).get(name)
    if entry is None:
        where = f"{manifest} has no entry {name!r}" if manifest.is_file() else f"{manifest} does not exist"
        raise MissingTeacherError(f"teacher {name!r} is not built ({where}); {fix}")
    if entry.get("scale") != scale:
        built = f"was built for scale={entry['scale']}" if entry.get("scale") else "records no scale (an older manifest)"
        raise MissingTeacherError(f"teacher {name!r} of {manifest} {built}, this run is scale={scale}; {fix}")
    path = Path(entry["path"])
    if not path.is_file():
        raise MissingTeacherError(f"teacher {name!r}: {path}, recorded in {manifest}, does not exist; {fix}")
    if sha256_file(path) != entry["sha256"]:
        raise MissingTeacherError(f"teacher {name!r}: {path} is not the file {manifest} records (sha256 "
                                  f"{entry['sha256'][:12]}...); {fix}")
    return {**spec, "path": str(path), "sha256": spec.get("sha256") or entry["sha256"]}
