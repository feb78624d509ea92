"""One command at a time in a folder or on a study: two runs that write the same files would
overwrite each other's. The claim is an advisory lock (flock) on the folder or file itself: it
creates nothing, and the system drops it when the process ends, however it ends (kill -9
included), so no stale lock is ever left to remove by hand."""

from __future__ import annotations

import errno
import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nar_search.search.errors import StudyConfigError

# What flock answers on filesystems that cannot take the lock: a command goes on without it.
UNLOCKABLE = {errno.EBADF, errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


@contextmanager
def exclusive(path: Path, what: str, fix: str) -> Iterator[None]:
    """Hold `path` (an existing folder or file) for this process, or stop in one line if
    another command holds it: `what` names it in that line, `fix` says what to do instead."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        try:
            locked = _lock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyConfigError(f"{what} {path} is in use by another nar command that is still running: {fix}") from None
        if not locked:
            warnings.warn(f"{path} cannot be locked on its filesystem: a second command there at once is not stopped", stacklevel=3)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextmanager
def one_at_a_time(folder: Path) -> Iterator[None]:
    """Waits until no other process holds `folder`, then holds it: for work that processes
    starting together must do one after another (making a new store)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        _lock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _lock(descriptor: int, operation: int) -> bool:
    """Whether flock took the lock: False on a filesystem that cannot take it (NFS, where a
    folder cannot be locked, or Lustre without flock), where the work goes on unguarded."""
    try:
        fcntl.flock(descriptor, operation)
    except OSError as error:
        if error.errno not in UNLOCKABLE:
            raise
        return False
    return True
