"""The tables of every paper on one pattern: an experiment's runs and their records beside the
paper's numbers, the floor rows under the same protocols, one number format, one provenance line.

    python -m eval.tables floors --paper bootleg [key=value ...]              # dvc.yaml's floors@<paper>
    python -m eval.tables render --paper bootleg [--out FILE] [key=value ...]  # = python bootleg/tables.py

``key=value`` are the overrides the paper's launch.py was given (``experiment=compare``,
``scale=mini``, ``results_root=...``), so a table shows what that launch wrote. A paper's
``tables.py`` only declares its rows and paper column (a ``Table``, from the planned runs);
``render_experiment`` adds the floor rows and writes markdown. Rendering only reads records: the
floors are evaluated by ``ensure_floors`` (the ``floors@<paper>`` stage of dvc.yaml, or the
launcher after its runs through ``table_after_runs``), never as a side effect of a table.

Layout (docs/CONTRACTS.md): a run's records are in ``eval.records.records_dir(cfg)``; the floors
of an experiment's table in ``<results_root>/<paper>/floors-<experiment>-<scale>/<floor>/`` with
``<floor>`` = ``pixels`` or ``random-init-<key>``: raw pixels, and one randomly initialised
encoder per distinct init and architecture among the table's runs (``floor_keys``, the keying
of dvc_runs.yaml's ``floor_archs``: ``<init>`` for the first arch of an init, ``<init>-<run>``
for a later one), each run's own encoder read at the run's feature, with the eval settings of
the first run it is the floor of; its table row names the runs it is the floor of.

Pretraining seeds: a run's seeds 1.. are the runs ``<run>-seed<i>`` (scripts/seeds.py), whose
records sit beside the run's own (``<results_root>/<paper>/<scale>/<run>-seed<i>/``). A cell whose
record has such siblings shows ``mean ± std (n=K)`` over the K seeds with a record (seed 0 = the
run), its provenance lists every seed's record, and a difference to a baseline row that is
seeded too is a difference of the means; a cell without seeds is shown as before.
"""
from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from omegaconf import OmegaConf

from eval.encoders import arch_feature, built_arch, floor_label, init_name
from eval.records import load_records, records_dir, same_recipe
from eval.stats import mean_pm_std, mean_std

PIXELS = "pixels"
SEED_NOTE = ("mean ± std (n=K): mean and sample standard deviation over the K pretraining seeds with a record "
             "(the run and its `<run>-seed<i>` runs); a difference in parentheses between two such cells is "
             "of the means; the other cells and the pretraining time are seed 0's.")
# the pixel floor has no weights to fine-tune and no attention to analyse
NOT_FOR_PIXELS = ("finetune", "analysis")
MISSING = "—"


# --------------------------------------------------------------------------- records and numbers
def load_run(directory) -> dict[str, dict]:
    """``{protocol: record}`` of one records directory: its own files, not its subdirectories'
    (an extra evaluation such as UDI+'s ``cls_plus/`` is a records directory of its own)."""
    return {r["protocol"]: r for r in load_records(sorted(Path(directory).glob("*.json")))}


def run_records(run) -> dict[str, dict]:
    """The records of one planned run (a ``common.launch.RunSpec``)."""
    return load_run(records_dir(run.cfg))


def fmt(value) -> str:
    """The one number format of the tables: one decimal, ``—`` where nothing was measured."""
    return MISSING if value is None else f"{value:.1f}"


def difference(value, base) -> str:
    """``+1.5``: ``value`` minus ``base``, ``—`` when either is unknown."""
    return MISSING if value is None or base is None else f"{value - base:+.1f}"


def delta(value, base) -> str:
    """`` (+1.5)`` after a number; nothing when either side is unknown."""
    return "" if value is None or base is None else f" ({difference(value, base)})"


def duration(seconds) -> str:
    if seconds is None:
        return MISSING
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _short(value, n: int = 12) -> str:
    return MISSING if value is None else str(value)[:n]


def provenance_line(record: dict) -> str:
    """Where one number comes from: its record file, checkpoint, config, commit, data, hardware."""
    wall = record.get("wall_time_s")
    return (f"`{record.get('_path', '?')}`: {record['metric']}={record['value']:.2f} "
            f"ckpt {_short(record.get('checkpoint_sha256'))} config {_short(record.get('config_hash'), 16)} "
            f"commit {_short(record.get('git_commit'))} data {_short(record.get('dataset_hash'))} "
            f"{record.get('hardware') or MISSING} eval {MISSING if wall is None else f'{wall:.0f} s'}, "
            f"{record.get('created') or MISSING}")


def seed_records(record: dict) -> dict[int, dict]:
    """{seed index: record} of one record and its counterparts in the seed runs of its run: the
    same file (``<protocol>.json``, or ``<extra>/<protocol>.json``) under each
    ``<run>-seed<i>`` directory beside the run's records directory. Seed 0 is ``record``; a seed
    without that file, or trained with another recipe than seed 0 (``same_recipe``), is left
    out. The run's directory is the record's nearest ancestor named
    by its ``run`` field, else the record's own directory."""
    if "_path" not in record:
        return {0: record}
    path = Path(record["_path"])
    run_dir = next((p for p in path.parents if p.name == record.get("run")), path.parent)
    pattern = re.compile(rf"^{re.escape(run_dir.name)}-seed([1-9][0-9]*)$")
    found = {0: record}
    for sibling in sorted(run_dir.parent.iterdir()) if run_dir.parent.is_dir() else []:
        if (m := pattern.match(sibling.name)) and (other := sibling / path.relative_to(run_dir)).is_file():
            for rec in load_records([other]):
                if rec["protocol"] == record["protocol"] and same_recipe(record, rec):
                    found[int(m.group(1))] = rec
    return dict(sorted(found.items()))


def train_seconds(records: Mapping[str, dict]):
    """Pretraining wall time of a row's run (every record of a run repeats it); None for floors."""
    return next((r["train_time_s"] for r in records.values() if r.get("train_time_s")), None)


def per_layer(record: dict | None) -> dict[int, float]:
    """Block -> value of a per-block grid (``linear/cls@3/best/top1``, ``knn/cls@3/k20/top1``),
    under the head setting of the record's headline (the last two parts of its key)."""
    if record is None:
        return {}
    suffix = "/".join(record["metric"].split("/")[-2:])
    pattern = re.compile(rf"^{re.escape(record['protocol'])}/[a-z_]+@(\d+)/{re.escape(suffix)}$")
    return {int(m.group(1)): v for k, v in record["metrics"].items() if (m := pattern.match(k))}


# --------------------------------------------------------------------------- what a paper declares
@dataclass(frozen=True)
class Column:
    """A measured column: the headline value of ``protocol``'s record, or its ``metric``, in which
    ``{feature}`` is the row's feature, else the last of the record's head grid (the final block
    of a per-block grid, the only feature otherwise)."""
    header: str
    protocol: str
    metric: str | None = None

    def value(self, records: Mapping[str, dict], feature: str | None = None):
        record = records.get(self.protocol)
        return None if record is None else self._read(record, self._feature(record, feature))

    def seed_values(self, records: Mapping[str, dict], feature: str | None = None) -> dict[int, tuple[float, dict]]:
        """{seed index: (value, record)} over the seeds of the row's run that have a value
        (``seed_records``), each read with the feature seed 0's record resolves to."""
        record = records.get(self.protocol)
        if record is None:
            return {}
        feature = self._feature(record, feature)
        found = {i: (self._read(r, feature), r) for i, r in seed_records(record).items()}
        return {i: found[i] for i in found if found[i][0] is not None}

    def _feature(self, record: dict, feature: str | None) -> str | None:
        return feature or (record.get("features") or [record.get("feature")])[-1]

    def _read(self, record: dict, feature: str | None):
        if self.metric is None:
            return record["value"]
        return record["metrics"].get(self.metric.format(feature=feature))


@dataclass(frozen=True)
class Row:
    """One table row: its records (``{protocol: record}``, empty for a paper-only row), its
    cells of the paper column(s), the head feature its columns read, and an optional baseline
    row whose values its cells are compared with."""
    label: str
    records: Mapping[str, dict] = field(default_factory=dict)
    paper: Sequence[str] = ()
    feature: str | None = None
    baseline: Row | None = None


@dataclass(frozen=True)
class Table:
    title: str
    columns: Sequence[Column]
    rows: Sequence[Row]
    paper_headers: Sequence[str] = ()
    notes: Sequence[str] = ()
    after: Sequence[str] = ()  # markdown below the table (e.g. SDSSL's per-block tables)


def rows_beside_paper(runs, paper: Mapping[str, tuple[str, Sequence[str]]]) -> list[Row]:
    """A row per entry of ``paper`` (run name -> (label, paper cells)), with that run's records
    if the experiment has it (a paper row we did not reproduce stays empty), then a row per run
    the paper does not list."""
    by_name = {run.name: run for run in runs}
    rows = [Row(label, run_records(by_name[name]) if name in by_name else {}, cells)
            for name, (label, cells) in paper.items()]
    return rows + [Row(run.name, run_records(run)) for run in runs if run.name not in paper]


def _md(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def per_layer_table(title: str, rows: Sequence[Row], protocol: str, depth: int) -> list[str]:
    """Markdown lines of one value per block 1..``depth``; a row with a baseline is followed by
    its difference to it."""
    lines = [f"**{title}**", "", _md(["row", *(f"L{l}" for l in range(1, depth + 1))]), "|---" * (depth + 1) + "|"]
    for row in rows:
        values = per_layer(row.records.get(protocol))
        lines.append(_md([row.label, *(fmt(values.get(l)) for l in range(1, depth + 1))]))
        if row.baseline is not None:
            base = per_layer(row.baseline.records.get(protocol))
            lines.append(_md([f"Δ {row.label}", *(difference(values.get(l), base.get(l)) for l in range(1, depth + 1))]))
    return lines


def cell(column: Column, row: Row) -> tuple[str, list[dict], int]:
    """One measured cell, the records it shows and its seed count: seed 0's number, or ``mean ± std (n=K)``
    over K >= 2 seeds, then the difference to the row's baseline: of the means when both cells
    are seeded, of seed 0's values when neither is, and marked ``seed 0`` when only one is."""
    seeds = column.seed_values(row.records, row.feature)
    value = column.value(row.records, row.feature)
    text = mean_pm_std(v for v, _ in seeds.values()) + f" (n={len(seeds)})" if len(seeds) > 1 else fmt(value)
    if row.baseline is not None:
        base = column.value(row.baseline.records, row.baseline.feature)
        base_seeds = column.seed_values(row.baseline.records, row.baseline.feature)
        if len(seeds) > 1 and len(base_seeds) > 1:
            text += delta(*(mean_std(v for v, _ in found.values())[0] for found in (seeds, base_seeds)))
        elif (len(seeds) > 1 or len(base_seeds) > 1) and value is not None and base is not None:
            text += f" (seed 0: {difference(value, base)})"
        else:
            text += delta(value, base)
    records = [record for _, record in seeds.values()]
    if column.protocol in row.records and (not seeds or 0 not in seeds):
        records.insert(0, row.records[column.protocol])  # seed 0's record, even without the column's value
    return text, records, len(seeds)


def floor_row(floor: Floor, rows: Sequence[Row]) -> Row:
    """A floor's row, read at the head feature of the first row measured on one of the floor's
    runs (where the floor has that head): a run with several heads (UDI's two class tokens and
    both together) is measured against its floor's same head, not the floor's best one."""
    records = load_run(floor.out_dir)
    features = [row.feature for row in rows if row.feature is not None
                and any(r.get("run") in floor.runs for r in row.records.values())]
    feature = next(iter(features), None)
    has = any(feature in (r.get("features") or []) for r in records.values())
    return Row(f"floor: {floor.label}", records, feature=feature if has else None)


def markdown(table: Table, floors: Sequence[Floor] = ()) -> str:
    """The table, its floor rows last, its notes, then the provenance of every number shown."""
    rows = [*table.rows, *(floor_row(floor, table.rows) for floor in floors)]
    header = ["row", *(c.header for c in table.columns), "pretrain time", *table.paper_headers]
    lines = [f"### {table.title}", "", _md(header), "|---" * len(header) + "|"]
    shown: dict[str, dict] = {}
    seeded = False
    for row in rows:
        cells = [row.label]
        for column in table.columns:
            text, records, n = cell(column, row)
            cells.append(text)
            seeded |= n > 1
            for record in records:
                shown.setdefault(record.get("_path", str(id(record))), record)
        paper = list(row.paper) + [MISSING] * (len(table.paper_headers) - len(row.paper))
        lines.append(_md([*cells, duration(train_seconds(row.records)), *paper]))
    notes = [*table.notes, *([SEED_NOTE] if seeded else [])]
    if notes:
        lines += ["", *notes]
    if table.after:
        lines += ["", *table.after]
    lines += ["", "Provenance of every number above (record, checkpoint, config, commit, data, hardware):", ""]
    lines += [f"- {provenance_line(r)}" for r in shown.values()] or [f"- no records yet ({MISSING} everywhere)"]
    return "\n".join(lines)


def render_experiment(paper: str, overrides: Sequence[str], declare: Callable[[list], Table]) -> str:
    """Markdown of the table ``declare(runs)`` of the experiment ``overrides`` select, with its
    floor rows. Reads records only."""
    from common.launch import plan_runs

    runs = plan_runs(paper, list(overrides))
    return markdown(declare(runs), table_floors(runs))


# --------------------------------------------------------------------------- floors
@dataclass(frozen=True)
class Floor:
    name: str          # pixels | random-init-<key> (floor_keys)
    arch: dict | None  # the random encoder's architecture; None for raw pixels
    eval_cfg: dict     # the eval block (protocols included) of the run it is the floor for
    out_dir: Path
    runs: tuple[str, ...] = ()  # the runs a random floor is the floor of, where known

    @property
    def label(self) -> str:
        if self.arch is None:
            return floor_label(PIXELS)
        label = floor_label("random", init_name(self.arch))
        return f"{label} for {', '.join(self.runs)}" if self.runs else label


def random_floor_name(init: str) -> str:
    return f"random-init-{init}"


def experiment_of(cfg) -> str:
    """An experiment's name without its scale (Bootleg's names carry it: ``compare-mini``)."""
    return str(cfg.experiment_name).removesuffix(f"-{cfg.scale_name}")


def floors_dir(results_root, paper: str, experiment: str, scale: str) -> Path:
    """The floors of one experiment's table: their eval settings are the experiment's (subsets,
    schedules), so the floors of another table or scale never overwrite them."""
    return Path(str(results_root)) / paper / f"floors-{experiment}-{scale}"


def pixel_eval_cfg(eval_cfg: Mapping) -> dict:
    """A run's eval block as the pixel floor can run it: without the protocols that need
    weights or attention, and with the pixels as the only feature of a named head grid."""
    cfg = copy.deepcopy(dict(eval_cfg))
    cfg["protocols"] = [p for p in cfg.get("protocols") or [] if p not in NOT_FOR_PIXELS]
    linear = cfg.get("linear") or {}
    if linear.get("features"):
        cfg["linear"] = {**linear, "features": [PIXELS]}
    return cfg


def read_feature(cfg, arch: dict) -> str:
    """The feature a run's encoder is read at (its encoder.pt meta ``feature``): the one
    ``method.eval_feature`` chooses where a method has that option (Hybrid Distill), else the
    one its arch's ``global_pool`` implies, as every other method exports."""
    chosen = cfg.method.get("eval_feature") if cfg.get("method") is not None else None
    return str(chosen) if chosen else arch_feature(arch)


def floor_arch(arch: dict, feature: str) -> dict:
    """The random encoder a run read at ``feature`` is measured against: its own ``arch``, with
    the ``global_pool`` that has eval read it at ``feature`` (``eval.encoders.arch_feature``); the
    pooling names the readout only, so the weights are the run's own before pretraining."""
    if arch_feature(arch) == feature:
        return arch
    return {**arch, "global_pool": "avg" if feature == "avgpool" else "token"}


def run_floor_arch(cfg) -> dict:
    """The arch of the random-init floor of the run ``cfg``."""
    from common.config import encoder_arch

    arch = encoder_arch(cfg)
    return floor_arch(arch, read_feature(cfg, arch))


def floor_keys(runs: Iterable[tuple[str, dict]]) -> tuple[dict[str, dict], dict[str, str]]:
    """The random-init floors of ``runs`` ((run name, floor arch), in order) as floor key -> arch,
    and each run's floor (run -> floor key): one floor per distinct (init, built arch), since a
    floor measures what pretraining added only if it is the run's own encoder before
    pretraining, read at the run's feature. The first arch of an init is keyed by the init alone
    (``timm``), so adding a run of another arch renames no existing floor and leaves its records
    valid; a later one by the init and the first run built with it (``timm-dino``), unique and
    stable while that run keeps its name."""
    archs: dict[str, dict] = {}
    keys: dict[tuple[str, str], str] = {}
    of_run: dict[str, str] = {}
    for name, arch in runs:
        init = init_name(arch)
        identity = (init, json.dumps(built_arch(arch), sort_keys=True))
        if identity not in keys:
            keys[identity] = init if init not in archs else f"{init}-{name}"
            archs[keys[identity]] = arch
        of_run[name] = keys[identity]
    return archs, of_run


def make_floors(root: Path, sources: Iterable[tuple[str, dict, Mapping]]) -> list[Floor]:
    """Raw pixels, then the random encoders of ``floor_keys`` among ``sources`` (the (run name,
    floor arch, eval block) of the runs a table compares, in order), each with the eval block of
    the first run it is the floor of."""
    sources = list(sources)
    if not sources:
        raise ValueError(f"no runs to take the floors of {root} from")
    floors = [Floor(PIXELS, None, pixel_eval_cfg(sources[0][2]), Path(root) / PIXELS)]
    archs, of_run = floor_keys((name, arch) for name, arch, _ in sources)
    for key, arch in archs.items():
        runs = [(run, eval_cfg) for run, _, eval_cfg in sources if of_run[run] == key]
        floors.append(Floor(random_floor_name(key), arch, copy.deepcopy(dict(runs[0][1])),
                            Path(root) / random_floor_name(key), tuple(run for run, _ in runs)))
    return floors


def table_floors(runs) -> list[Floor]:
    """The floors of the table of ``runs`` (the planned runs of one experiment)."""
    cfg = runs[0].cfg
    root = floors_dir(cfg.results_root, str(cfg.paper), experiment_of(cfg), str(cfg.scale_name))
    return make_floors(root, [(run.name, run_floor_arch(run.cfg), OmegaConf.to_container(run.cfg.eval, resolve=True))
                              for run in runs])


def ensure_floors(floors: Iterable[Floor], run_info: dict | None = None) -> list[dict]:
    """Every protocol of each floor, unless its record is current (``evaluate_unless_current``:
    the same eval settings and, for a random encoder, the same arch and seed): a changed probe
    schedule or architecture is evaluated again, an unchanged floor costs nothing."""
    from eval.api import evaluate_unless_current
    from eval.encoders import random_sha256, random_spec
    from eval.settings import resolve

    records = []
    for floor in floors:
        spec, sha = PIXELS, None  # the pixels differ only by dataset, which the settings hash holds
        if floor.arch is not None:
            spec = random_spec(floor.arch, floor.out_dir)
            arch = json.loads(Path(spec.split(":", 1)[1]).read_text())
            sha = random_sha256(arch, int(resolve(floor.eval_cfg).seed))
        for protocol in floor.eval_cfg.get("protocols") or []:
            records += evaluate_unless_current(spec, protocol, floor.eval_cfg, out_dir=floor.out_dir,
                                               run_info={**(run_info or {}), "row": floor.name},
                                               checkpoint_sha256=sha)
    return records


def ensure_experiment_floors(paper: str, overrides: Sequence[str]) -> list[dict]:
    """The floors of the table of the experiment ``overrides`` select."""
    from common.launch import plan_runs

    runs = plan_runs(paper, list(overrides))
    cfg = runs[0].cfg
    return ensure_floors(table_floors(runs), {"paper": paper, "experiment": str(cfg.experiment_name)})


# --------------------------------------------------------------------------- entry points
def paper_tables(paper: str):
    """The ``<paper>.tables`` module (its ``render(overrides)``)."""
    return importlib.import_module(f"{paper}.tables")


def table_after_runs(paper: str) -> Callable[[list[str]], str]:
    """What a paper's launch.py passes as ``render_table``: the floors of the experiment it ran
    (unless current), then its table. Runs on SLURM leave the floors to a job of their own."""
    def floors_then_table(overrides: list[str]) -> str:
        from common.config import load_config

        if load_config(paper, list(overrides), validate=False).cluster.executor == "slurm":
            print(f"floor rows: python -m eval.tables floors --paper {paper} {shlex.join(overrides)}", flush=True)
        else:
            ensure_experiment_floors(paper, overrides)
        return paper_tables(paper).render(overrides)
    return floors_then_table


def _parser(prog: str, description: str, commands: Sequence[str] = ()):
    from common.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog=prog, description=description)
    if commands:
        parser.add_argument("command", choices=commands,
                            help="floors: evaluate the floor rows unless current; render: the table, from records")
    parser.add_argument("--out", type=Path, help="also write the markdown to this file (render)")
    parser.add_argument("overrides", nargs="*",
                        help="key=value as given to the paper's launch.py, e.g. experiment=compare scale=mini")
    return parser


def _overrides(parser, items: list[str]) -> list[str]:
    for item in items:
        if "=" not in item:
            parser.error(f"argument {item!r} is not key=value; name the experiment as the launch does, "
                         "e.g. experiment=compare scale=mini")
    return items


def _render_and_write(render: Callable[[list[str]], str], overrides: list[str], out: Path | None) -> None:
    from common.cli import user_errors
    from common.io import atomic_write

    with user_errors():
        text = render(overrides)
    print(text)
    if out is not None:
        atomic_write(out, text + "\n")


def render_cli(render: Callable[[list[str]], str], argv: list[str] | None = None) -> None:
    """``python <paper>/tables.py [--out FILE] [key=value ...]``: the table, read from records."""
    parser = _parser(f"python {Path(sys.argv[0]).parent.name}/tables.py", "Render the paper's table from its records.")
    args = parser.parse_intermixed_args(argv)
    _render_and_write(render, _overrides(parser, args.overrides), args.out)


def main(argv: list[str] | None = None) -> None:
    from common.cli import user_errors
    from common.papers import discover_papers

    parser = _parser("python -m eval.tables", __doc__.split("\n\n")[0], ("floors", "render"))
    parser.add_argument("--paper", required=True, choices=discover_papers(Path.cwd()))
    args = parser.parse_intermixed_args(argv)
    overrides = _overrides(parser, args.overrides)
    if args.command == "floors":
        with user_errors():
            ensure_experiment_floors(args.paper, overrides)
        return
    _render_and_write(paper_tables(args.paper).render, overrides, args.out)


if __name__ == "__main__":
    main()
