"""Atomic file writes: a crash (SIGKILL, full disk, node loss) leaves the old file or the complete
new one at `path`, never half a file, and no temporary file behind when the write itself fails.

The content goes to a temporary file in the same directory (same file system, so the rename is
atomic), is flushed to disk, and then replaces `path` with `os.replace`. Every file a later step
trusts goes through here: checkpoints, encoders and their `.sha256`, `done.json`, run configs and
`config_hash`, evaluation records, prepared data, the teachers manifest.

(`common/io.py` is never run as a script, so it never shadows the standard library's `io`.)
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

# mkstemp creates 0600; runs, records and prepared data are meant to be read by others
MODE = 0o644


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces `path` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, content: Any) -> Path:
    """Write `content` to `path` atomically: `bytes` as they are, `str` as UTF-8 text, anything
    else with `torch.save`. Returns `path`."""
    with atomic_file(path) as f:
        if isinstance(content, (bytes, bytearray, memoryview)):
            f.write(content)
        elif isinstance(content, str):
            f.write(content.encode("utf-8"))
        else:
            import torch  # only torch objects need it; config and records writers stay light

            torch.save(content, f)
    return Path(path)
