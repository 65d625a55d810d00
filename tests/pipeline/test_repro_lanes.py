"""scripts/repro_lanes.py on a three-stage DVC project: a -> (b, c). It runs what `dvc repro`
would, two stages at once, each with the thread count it was given, and leaves dvc.lock as
`dvc repro` would (`dvc status` clean); a failed stage stops only what depends on it."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LANES = REPO / "scripts" / "repro_lanes.py"
DVC = Path(sys.executable).with_name("dvc")

# b and c each wait (up to 60 s) for the other to have started: they finish only if run at once
WAIT_FOR = "touch {me}.started; for i in $(seq 600); do [ -e {other}.started ] && break; sleep 0.1; done; " \
           "[ -e {other}.started ] && cat a.txt > {me}.txt"
DVC_YAML = f"""stages:
  a:
    cmd: {{a_cmd}}
    deps: [source.txt]
    outs: [a.txt]
  b:
    cmd: {WAIT_FOR.format(me="b", other="c")}
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: {WAIT_FOR.format(me="c", other="b")}
    deps: [a.txt]
    outs: [c.txt]
"""


def project(tmp_path: Path, a_cmd: str = 'echo "threads=$OMP_NUM_THREADS" > a.txt') -> Path:
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "source.txt").write_text("v1\n")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML.format(a_cmd=a_cmd))
    return tmp_path


def lanes(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LANES), *args], cwd=root, capture_output=True, text=True,
                          timeout=300)


def dvc_status(root: Path) -> str:
    return subprocess.run([str(DVC), "status"], cwd=root, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = project(tmp_path_factory.mktemp("lanes"))
    return root, lanes(root, "--lanes", "2", "--threads", "1")


def test_runs_independent_stages_at_once_with_the_given_threads(ran):
    root, result = ran
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "b.txt").read_text() == (root / "c.txt").read_text() == "threads=1\n"
    assert result.stdout.index("done  a") < result.stdout.index("start b")


def test_leaves_dvc_lock_as_dvc_repro_would(ran):
    root, _ = ran
    assert "up to date" in dvc_status(root)
    again = lanes(root)
    assert again.returncode == 0 and "nothing to run" in again.stdout


def test_a_changed_dependency_reruns_it_and_everything_downstream(ran):
    root, _ = ran
    (root / "source.txt").write_text("v2\n")
    planned = lanes(root, "--dry-run")
    assert planned.stdout.split() == ["a", "b", "c"]
    only_b = lanes(root, "b", "--dry-run")  # a target brings its changed upstream, not its siblings
    assert only_b.stdout.split() == ["a", "b"]


def test_stages_whose_upstream_reran_to_the_same_outputs_are_kept_not_run(tmp_path):
    root = project(tmp_path, a_cmd="echo constant > a.txt")
    assert lanes(root, "--lanes", "2").returncode == 0
    (root / "source.txt").write_text("v2\n")  # a re-runs, and writes the same a.txt
    assert lanes(root, "--dry-run").stdout.split() == ["a", "b", "c"]
    result = lanes(root, "--lanes", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done  a" in result.stdout and "keep  b" in result.stdout and "keep  c" in result.stdout
    assert "start b" not in result.stdout and "start c" not in result.stdout
    assert "up to date" in dvc_status(root)


def test_a_failed_stage_stops_what_depends_on_it_and_names_its_log(tmp_path):
    root = project(tmp_path, a_cmd="echo broken; exit 3")
    result = lanes(root, "--lanes", "2")
    assert result.returncode == 1
    assert "FAIL  a (exit 3" in result.stdout and "skip  b" in result.stdout and "skip  c" in result.stdout
    log = root / ".dvc" / "tmp" / "lanes" / "a.log"
    assert str(log) in result.stdout and "broken" in log.read_text()
    assert not (root / "dvc.lock").exists()


def test_an_unknown_target_is_refused_with_the_way_to_list_stages(tmp_path):
    result = lanes(project(tmp_path), "pretrain@nope")
    assert result.returncode != 0 and "dvc stage list" in result.stderr


CHAIN_YAML = """stages:
  a:
    cmd: {a_cmd}
    deps: [source.txt]
    outs: [a.txt]
  b:
    cmd: cat a.txt > b.txt
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: {c_cmd}
    deps: [a.txt]
    outs: [c.txt]
"""


def chain(root: Path, a_cmd: str = "cat source.txt > a.txt", c_cmd: str = "cat a.txt > c.txt") -> Path:
    if not (root / ".dvc").exists():
        subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=root, check=True)
        (root / "source.txt").write_text("v1\n")
    (root / "dvc.yaml").write_text(CHAIN_YAML.format(a_cmd=a_cmd, c_cmd=c_cmd))
    return root


def as_fresh_clone(root: Path) -> None:
    """What a clone without the DVC cache or a remote holds: dvc.yaml and dvc.lock, no outputs."""
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).unlink()
    shutil.rmtree(root / ".dvc" / "cache")


def test_first_moves_the_matching_stages_and_what_they_need_to_the_front(tmp_path):
    root = chain(tmp_path)
    assert lanes(root, "--dry-run").stdout.split() == ["a", "b", "c"]
    assert lanes(root, "--dry-run", "--first", "c").stdout.split() == ["a", "c", "b"]


def test_repeated_first_runs_its_patterns_in_the_order_given(tmp_path):
    root = chain(tmp_path)
    assert lanes(root, "--dry-run", "--first", "c", "--first", "b").stdout.split() == ["a", "c", "b"]
    assert lanes(root, "--dry-run", "--first", "b", "--first", "c").stdout.split() == ["a", "b", "c"]
    # a later pattern's match that an earlier tier already placed is not moved again
    assert lanes(root, "--dry-run", "--first", "c", "--first", "a").stdout.split() == ["a", "c", "b"]


def test_allow_missing_runs_what_changed_and_rebuilds_only_the_missing_inputs_it_needs(tmp_path):
    root = chain(tmp_path)
    assert lanes(root).returncode == 0
    as_fresh_clone(root)
    assert lanes(root, "--dry-run").stdout.split() == ["a", "b", "c"]  # without it: everything is missing
    assert "nothing to run" in lanes(root, "--allow-missing", "--dry-run").stdout
    chain(root, c_cmd="cat a.txt a.txt > c.txt")  # c's command changed; a and b did not
    planned = lanes(root, "--allow-missing", "--dry-run")
    assert planned.stdout.split() == ["a", "c"] and "restore a:" in planned.stderr
    result = lanes(root, "--allow-missing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "start b" not in result.stdout and "note" not in result.stdout  # a came out as pinned
    assert (root / "c.txt").read_text() == "v1\nv1\n" and not (root / "b.txt").exists()
    assert "nothing to run" in lanes(root, "--allow-missing", "--dry-run").stdout


def test_allow_missing_says_when_a_rebuilt_input_differs_from_the_pinned_one(tmp_path):
    root = chain(tmp_path, a_cmd="date +%N > a.txt")
    assert lanes(root).returncode == 0
    as_fresh_clone(root)
    chain(root, a_cmd="date +%N > a.txt", c_cmd="cat a.txt a.txt > c.txt")
    result = lanes(root, "--allow-missing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note  a: rebuilt, but not to the outputs dvc.lock pinned" in result.stdout
