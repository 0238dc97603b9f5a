"""An exclusive lock on an open file that the operating system releases when its holder dies:
fcntl's flock on POSIX, msvcrt's byte-range lock on Windows (where fcntl does not exist); on a
platform with neither, no lock, with a warning once."""

from __future__ import annotations

import errno
import logging
import os
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


class FolderLock:
    """One writer per output folder (predict.py --out, an export, a runs folder under
    `evaluate.py --all`): an exclusive lock on the folder itself (its directory handle), so that
    no lock file appears among the outputs. A second writer is refused with `error(message)`.
    POSIX only (directories cannot be opened for locking on Windows: there, no lock)."""

    def __init__(self, path: str, what: str, error: type[Exception]):
        self.path, self.what, self.error = path, what, error
        self._fd = None

    def __enter__(self):
        if fcntl is None or not hasattr(os, "O_DIRECTORY"):
            return self
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise self.error(
                    f"{self.path} is in use by another process writing {self.what}: one writer at a time. "
                    "Wait for it to finish, or choose another folder"
                ) from None
            # NFS (EBADF), SMB and some others cannot lock a directory: go on without, said once
            global _warned
            if not _warned:
                _warned = True
                log.warning(
                    "%s: this file system cannot lock folders (%s); one writer is not enforced",
                    self.path,
                    err,
                )
            return self
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        return False
