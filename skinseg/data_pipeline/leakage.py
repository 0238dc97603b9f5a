"""Train/test leakage: the same image in two splits, by its ID or by its pixels (a copy under
another name), and duplicates within one split.

An image in both the training and the test split makes the test score a training score; in the
training and the validation split, it biases the choice of the best epoch. Both are errors for
training and evaluation unless overridden (`--allow-overlap`, recorded in split.json); a
duplicate within one split only weighs that image twice, and is a warning."""

from __future__ import annotations

import unicodedata

from skinseg.data_pipeline.discovery import Problem


def _key(id_: str) -> str:
    return unicodedata.normalize("NFC", id_)


def find_overlaps(splits: dict[str, list]) -> list[Problem]:
    """`splits`: split name -> PairInfo list (with `.pair` and `.digest`). Returns an error per
    image found in an earlier split, and a warning per duplicate within a split."""
    problems: list[Problem] = []
    seen_id: dict[str, tuple[str, str]] = {}  # ID -> (split, image path)
    seen_digest: dict[str, tuple[str, str]] = {}
    for split, infos in splits.items():
        here_id: dict[str, str] = {}
        here_digest: dict[str, str] = {}
        for info in infos:
            pair, key = info.pair, _key(info.pair.id)
            if key in seen_id or info.digest in seen_digest:
                other_split, other = seen_id.get(key) or seen_digest[info.digest]
                how = f"ID {pair.id}" if key in seen_id else f"the same pixels as {other}"
                problems.append(
                    Problem(
                        pair.image,
                        f"also in the {other_split} split ({how}): train/test leakage",
                        "error",
                        split,
                    )
                )
            elif info.digest in here_digest:
                problems.append(
                    Problem(
                        pair.image,
                        f"same pixels as {here_digest[info.digest]} in this split",
                        "warning",
                        split,
                    )
                )
            here_id.setdefault(key, pair.image)
            here_digest.setdefault(info.digest, pair.image)
        for key, path in here_id.items():
            seen_id.setdefault(key, (split, path))
        for digest, path in here_digest.items():
            seen_digest.setdefault(digest, (split, path))
    return problems


def overlap_with_record(infos, record: dict) -> list[str]:
    """Image paths among `infos` whose ID or pixels a run trained or selected its model on
    (`record`: its split.json)."""
    rows = [row for name in ("train", "validation") for row in record.get(name, [])]
    ids = {_key(row["id"]) for row in rows}
    digests = {row["digest"] for row in rows if row.get("digest")}
    return [info.pair.image for info in infos if _key(info.pair.id) in ids or info.digest in digests]
