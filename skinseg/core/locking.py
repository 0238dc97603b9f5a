"""An exclusive lock on an open file that the operating system releases when its holder dies:
fcntl's flock on POSIX, msvcrt's byte-range lock on Windows (where fcntl does not exist); on a
platform with neither, no lock, with a warning once."""

from __future__ import annotations

import errno
import logging
import time

try:  # POSIX
    import fcntl
except ImportError:
    fcntl = None
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None

log = logging.getLogger("skinseg")
_warned = False


def try_lock(handle) -> bool:
    """Take an exclusive lock on `handle` without waiting: True, or False when another process
    holds it."""
    global _warned
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
    if msvcrt is not None:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    if not _warned:
        _warned = True
        log.warning("no file locking on this platform: one writer per folder is not enforced")
    return True


def wait_lock(handle, poll: float = 0.1) -> None:
    """Take an exclusive lock on `handle`, waiting for its holder as long as it holds it."""
    while not try_lock(handle):
        time.sleep(poll)
