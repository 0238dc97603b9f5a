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


def is_out_of_memory(err: BaseException) -> bool:
    """Python's MemoryError, TensorFlow's ResourceExhaustedError, or OpenCV's own allocation
    failure (cv2.error, code -4 "Insufficient memory"), as an address-space or container limit (or
    a full GPU) makes them: to be reported in one line, with the file's size where one is to blame,
    rather than as a traceback. (By class name: this floor does not import TensorFlow.)"""
    if isinstance(err, MemoryError):
        return True
    if type(err).__name__ == "ResourceExhaustedError":  # TensorFlow's "OOM when allocating tensor"
        return True
    return type(err).__module__.startswith("cv2") and getattr(err, "code", None) == -4


def memory_problem(height: int, width: int, what: str) -> str:
    """The line a file too large for the memory left gets (its size, and the ways out)."""
    return (
        f"not enough memory to {what} ({width}x{height}, {height * width / 1e6:.0f} MP); free memory, "
        "or shrink the image first (predict.py --max-pixels N refuses such files before decoding)"
    )
