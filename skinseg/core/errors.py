"""The project's errors: one base class, so that a command turns every failure a user can meet
and fix into one line naming the file and an exit code, and lets anything else (a bug) show its
traceback. Each error is raised at the edge (a command, a loader) with the file and the fix in
its message; inner code trusts its inputs."""

from __future__ import annotations


class SkinsegError(Exception):
    """A failure of the input or the environment that the message explains; exit 2."""

    exit_code = 2


class DataError(SkinsegError):
    """A data set that cannot be used as given; the message names the file(s) and the fix."""


class ImageReadError(DataError):
    """One file that cannot be decoded (empty, truncated, not an image, unreadable)."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunFolderError(SkinsegError, RuntimeError):
    """The run folder cannot be used as asked; the message names the file and the way out."""


class RunLockedError(RunFolderError):
    """Another process holds the folder's lock."""


class ModelLoadError(SkinsegError, RuntimeError):
    """A saved model that cannot be loaded or is not a segmenter of RGB images."""
