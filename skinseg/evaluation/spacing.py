"""Pixel spacing for the distance metrics: one value for every image, or one per image from a CSV."""

from __future__ import annotations

import csv
import os

from skinseg.core.errors import DataError


def parse_spacing(text: str | None):
    """`None`, "S" (square pixels of size S), "ROW,COL", or a CSV file with columns `id` and
    `spacing` (or `row` and `col`). Returns a function of an image ID giving (row, col) or None,
    in units per *original* pixel (e.g. mm)."""
    if not text:
        return lambda _id: None
    if os.path.isfile(text):
        return _from_csv(text)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"--spacing {text!r}: not a number, ROW,COL, or an existing CSV file") from None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise DataError(f"--spacing {text!r}: give one or two positive numbers")
    row, col = (values[0], values[0]) if len(values) == 1 else values
    return lambda _id: (row, col)


def _from_csv(path: str):
    table = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                if "spacing" in row:
                    table[row["id"]] = (float(row["spacing"]),) * 2
                else:
                    table[row["id"]] = (float(row["row"]), float(row["col"]))
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"{path}, line {line}: expected columns id and spacing (or id, row and col)"
                ) from None
    return table.get
