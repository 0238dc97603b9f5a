"""The data the benches use: the shared ISIC set when it is there, else the synthetic one."""

from __future__ import annotations

import os

REAL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "shared",
    "data",
    "isic_seed128",
)


def bench_pairs(split: str = "train", data: str | None = None):
    from skinseg.data_pipeline.discovery import discover_pairs
    from skinseg.data_pipeline.synthetic import default_data

    root = data or (REAL if os.path.isdir(REAL) else default_data())
    found = discover_pairs(root)
    return root, found.splits[split]
