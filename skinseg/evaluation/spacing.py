"""Pixel spacing for the distance metrics: one value for every image, or one per image from a CSV."""

from __future__ import annotations

import csv
import math
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
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise DataError(f"--spacing {text!r}: give one or two positive, finite numbers")
    row, col = (values[0], values[0]) if len(values) == 1 else values
    return lambda _id: (row, col)


def _from_csv(path: str):
    """id,spacing (or id,row,col) rows; a row with id `*` is the default for images the file does
    not list. An image with neither is an error when it is scored (never pixels mixed with
    millimetres in one mean)."""
    table = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:  # Excel writes a BOM
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                if "spacing" in row:
                    value = (float(row["spacing"]),) * 2
                else:
                    value = (float(row["row"]), float(row["col"]))
                key = row["id"]
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"{path}, line {line}: expected columns id and spacing (or id, row and col)"
                ) from None
            if not all(math.isfinite(v) and v > 0 for v in value):
                raise DataError(
                    f"{path}, line {line}: spacing of {key} must be positive and finite; got {value}"
                )
            if key in table:
                raise DataError(f"{path}, line {line}: {key} is listed twice")
            table[key] = value
    default = table.pop("*", None)

    def spacing_of(id_: str):
        found = table.get(id_, default)
        if found is None:
            raise DataError(
                f"{path}: no spacing for {id_} (and no default row with id *): its distances would be "
                "in pixels, the others' in the file's units"
            )
        return found

    return spacing_of


def spacing_digest(text: str | None) -> str | None:
    """What the spacing was, by content: a CSV's bytes (edited, it is another spacing), or the text."""
    if text and os.path.isfile(text):
        import hashlib

        with open(text, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    return text
