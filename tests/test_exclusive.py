"""One command at a time in a folder: a lock another process holds stops this one in one line,
and a holder killed outright leaves nothing behind to remove by hand."""

import signal
import subprocess
import sys

import pytest

from nar_search.search.errors import StudyConfigError
from nar_search.search.exclusive import exclusive

HOLDER = (
    "import fcntl, os, sys, time; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
)


def test_a_folder_held_by_another_process_stops_this_one_until_that_one_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        refused = pytest.raises(StudyConfigError, match=f"the run folder {tmp_path} is in use by another nar command.*give another")
        with refused, exclusive(tmp_path, "the run folder", "give another"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive(tmp_path, "the run folder", "give another"):
        assert list(tmp_path.iterdir()) == []  # the claim made nothing


def test_the_claim_is_released_when_the_command_ends(tmp_path):
    for _ in range(2):
        with exclusive(tmp_path, "the run folder", "give another"):
            pass


def test_a_filesystem_that_cannot_lock_a_folder_lets_the_command_go_on_and_says_so(tmp_path, monkeypatch):
    import errno
    import fcntl

    def nfs(descriptor, operation):  # NFS: flock on a read-only descriptor
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", nfs)
    with pytest.warns(UserWarning, match="cannot be locked on its filesystem"), exclusive(tmp_path, "the run folder", "give another"):
        pass
