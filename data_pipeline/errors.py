"""Errors raised at the data edge. Each names the file and what to do about it."""

from __future__ import annotations


class DataError(Exception):
    """A data set that cannot be used as given; the message names the file(s) and the fix."""


class ImageReadError(DataError):
    """One file that cannot be decoded (empty, truncated, not an image, unreadable)."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
