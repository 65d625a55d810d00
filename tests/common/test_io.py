"""common.io.atomic_write: the content of each kind arrives whole; a failed write changes nothing."""
from __future__ import annotations

import pytest
import torch

from common.io import atomic_file, atomic_write


def test_bytes_text_and_torch_objects_are_written_as_given(tmp_path):
    raw = bytes(range(256)) * 3
    assert atomic_write(tmp_path / "a.bin", raw).read_bytes() == raw
    text = "step 1\nvalue ü é\n"
    assert atomic_write(tmp_path / "a.txt", text).read_text(encoding="utf-8") == text
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    loaded = torch.load(atomic_write(tmp_path / "a.pt", state), weights_only=True)
    assert loaded["step"] == 7 and torch.equal(loaded["w"], state["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.pt", "a.txt"]


def test_missing_parent_directories_are_created_and_files_are_readable_by_others(tmp_path):
    path = atomic_write(tmp_path / "x" / "y" / "record.json", "{}\n")
    assert path.read_text() == "{}\n"
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_existing_file_is_replaced(tmp_path):
    path = tmp_path / "done.json"
    path.write_text("old")
    atomic_write(path, "new")
    assert path.read_text() == "new"


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_a_failing_torch_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"previous checkpoint")
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_write(path, {"ok": torch.ones(1000), "bad": Unpicklable()})
    assert path.read_bytes() == b"previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_an_error_after_part_of_the_content_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old record")
    with pytest.raises(OSError, match="disk full"):
        with atomic_file(path) as f:
            f.write(b"half a rec")
            raise OSError("disk full")
    assert path.read_text() == "old record"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_write(tmp_path / "new.pt", Unpicklable())
    assert list(tmp_path.iterdir()) == []
