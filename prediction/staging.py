"""Files put in place whole, so that readers of a run's files never see half of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def put_in_place(path: Path, write: Callable[[Path], object]) -> None:
    """Write `path` through a staged file of this process and rename it into place: readers, and
    other shards writing the same file, never see half a file."""
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        write(staged)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
