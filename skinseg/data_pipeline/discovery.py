"""Find image/mask pairs in the layouts users actually have.

Accepted, given the folder that holds them:
- ISIC 2016 Part 1: ISBI2016_ISIC_Part1_{Training,Test}_{Data,GroundTruth}
- ISIC 2017: ISIC-2017_{Training,Validation,Test_v2}_{Data,Part1_GroundTruth}
- ISIC 2018: ISIC2018_Task1-2_{Training,Validation,Test}_Input, ISIC2018_Task1_*_GroundTruth
- simple: {training,validation,testing}/{image,label} (also train/val/test, images/masks)
- explicit: any images folder and masks folder (one split, "all")

Only names are matched here (fast); decoding problems are found by `checks.check_pairs`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field

from skinseg.core.errors import DataError
from skinseg.data_pipeline.image_io import IMAGE_SUFFIXES, MASK_SUFFIXES

SPLIT_ORDER = ("train", "validation", "test", "all")
_SPLIT_NAMES = {
    "training": "train",
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "testing": "test",
    "test": "test",
    "test_v2": "test",
}
_IMAGE_DIRS = ("image", "images", "img", "imgs")
_MASK_DIRS = ("label", "labels", "mask", "masks", "groundtruth", "ground_truth")
_ISIC_LAYOUTS = (
    (
        "isic2016",
        re.compile(r"^ISBI2016_ISIC_Part1_(Training|Test)_Data$", re.I),
        "ISBI2016_ISIC_Part1_{}_GroundTruth",
    ),
    (
        "isic2017",
        re.compile(r"^ISIC-2017_(Training|Validation|Test_v2)_Data$", re.I),
        "ISIC-2017_{}_Part1_GroundTruth",
    ),
    (
        "isic2018",
        re.compile(r"^ISIC2018_Task1-2_(Training|Validation|Test)_Input$", re.I),
        "ISIC2018_Task1_{}_GroundTruth",
    ),
)
_MASK_SUFFIX = re.compile(r"_segmentation$", re.I)
_IGNORED_IMAGE = re.compile(r"_superpixels$", re.I)  # ISIC 2017 ships these beside the images


@dataclass(frozen=True)
class Pair:
    id: str
    image: str
    mask: str


@dataclass(frozen=True)
class Problem:
    file: str
    problem: str
    severity: str = "error"  # "error": the pair is unusable; "warning": converted or informational
    split: str = ""  # the split whose folders hold the file, when known

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Discovery:
    root: str
    layout: str
    splits: dict[str, list[Pair]]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def errors_of(self, split: str) -> list[Problem]:
        """Name-level errors of one split (and those of no particular split)."""
        return [p for p in self.errors if p.split in (split, "")]


def _subdirs(path: str) -> dict[str, str]:
    """Lower-cased name -> path of the folders directly inside `path`."""
    try:
        entries = list(os.scandir(path))
    except PermissionError:
        raise DataError(f"{path}: permission denied (make the folder readable)") from None
    out = {}
    for entry in entries:
        try:
            if entry.is_dir():
                out[entry.name.lower()] = entry.path
        except OSError:  # a symlink loop named like a folder
            continue
    return out


def _unwrap(path: str) -> str:
    """Some unzip tools create X/X/: descend into a lone same-named folder."""
    inner = os.path.join(path, os.path.basename(path))
    if os.path.isdir(inner):
        return inner
    return path


def _files(folder: str, suffixes: tuple[str, ...], problems: list[Problem]) -> list[tuple[str, str]]:
    """(stem, path) of the candidate files in `folder`, sorted by name."""
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name
        stem, ext = os.path.splitext(name)
        if name.startswith(".") or ext.lower() not in suffixes:
            continue  # README/LICENSE/.csv files sit beside the images in ISIC downloads
        try:
            regular = entry.is_file()
        except OSError:
            regular = False
        if not regular:
            why = "symlink loop or dangling link" if entry.is_symlink() else "not a regular file"
            problems.append(Problem(entry.path, why))
            continue
        if not _is_utf8(name):
            problems.append(
                Problem(
                    entry.path, "file name is not valid UTF-8 (used as it is; shown with escapes)", "warning"
                )
            )
        out.append((stem, entry.path))
    return out


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogate escapes
        return False
    return True


def image_id(stem: str) -> str:
    """The ID a file name stands for: NFC-normalised, so that a name typed on macOS (NFD) and
    the same name from elsewhere (NFC) pair up."""
    return unicodedata.normalize("NFC", stem)


def _group(files: list[tuple[str, str]], key, kind: str, problems: list[Problem]) -> tuple[dict, set]:
    """(ID -> path of the files whose ID is theirs alone, the IDs several files claim)."""
    grouped: dict[str, list[str]] = {}
    for stem, path in files:
        grouped.setdefault(key(stem), []).append(path)
    unique, shared = {}, set()
    for id_, paths in grouped.items():
        if len(paths) > 1:
            names = ", ".join(os.path.basename(p) for p in paths)
            for p in paths:
                problems.append(Problem(p, f"two {kind}s share the ID {id_} ({names}); remove one"))
            shared.add(id_)
        else:
            unique[id_] = paths[0]
    return unique, shared


def pair_folders(image_dir: str, mask_dir: str, problems: list[Problem], split: str = "") -> list[Pair]:
    """Match `ID.ext` images with `ID_segmentation.ext` (any case) or `ID.ext` masks. The
    problems found are appended to `problems`, tagged with `split`."""
    found: list[Problem] = []
    pairs = _pair(image_dir, mask_dir, found)
    problems.extend(dataclasses.replace(p, split=split) for p in found)
    return pairs


def _pair(image_dir: str, mask_dir: str, problems: list[Problem]) -> list[Pair]:
    same_folder = os.path.realpath(image_dir) == os.path.realpath(mask_dir)
    image_files = [
        (stem, path)
        for stem, path in _files(image_dir, IMAGE_SUFFIXES, problems)
        if not _IGNORED_IMAGE.search(stem) and not (same_folder and _MASK_SUFFIX.search(stem))
    ]
    mask_files = _files(mask_dir, MASK_SUFFIXES, [] if same_folder else problems)
    if same_folder:
        mask_files = [(stem, path) for stem, path in mask_files if _MASK_SUFFIX.search(stem)]
    images, shared_images = _group(image_files, image_id, "image", problems)
    masks, shared_masks = _group(mask_files, lambda s: image_id(_MASK_SUFFIX.sub("", s)), "mask", problems)
    pairs = []
    for id_, image in images.items():
        if id_ in masks:
            pairs.append(Pair(id_, image, masks[id_]))
        elif id_ not in shared_masks:  # (two masks of this ID: already reported)
            expected = os.path.join(mask_dir, f"{id_}_segmentation.png")
            problems.append(Problem(image, f"image without a mask (expected {expected})"))
    for id_, mask in masks.items():
        if id_ not in images and id_ not in shared_images:
            problems.append(Problem(mask, f"mask without an image (no {id_}.jpg/.png in {image_dir})"))
    return sorted(pairs, key=lambda p: p.id)


def _isic(root: str, dirs: dict[str, str], problems: list[Problem]) -> tuple[str, dict] | None:
    found: dict[str, dict[str, list[Pair]]] = {}
    for challenge, image_pattern, mask_template in _ISIC_LAYOUTS:
        for lower, path in dirs.items():
            match = image_pattern.match(lower)
            if not match:
                continue
            split_token = os.path.basename(path)[match.start(1) : match.end(1)]
            split = _SPLIT_NAMES[split_token.lower()]
            mask_name = mask_template.format(split_token).lower()
            image_dir = _unwrap(path)
            if mask_name not in dirs:
                problems.append(
                    Problem(path, f"no ground-truth folder {mask_template.format(split_token)}", split=split)
                )
                continue
            pairs = pair_folders(image_dir, _unwrap(dirs[mask_name]), problems, split)
            found.setdefault(challenge, {})[split] = pairs
    if not found:
        return None
    if len(found) > 1:
        raise DataError(
            f"{root}: holds folders of several challenges ({', '.join(sorted(found))}); "
            "pass the folder of one of them"
        )
    ((challenge, splits),) = found.items()
    return challenge, splits


def _simple(dirs: dict[str, str], problems: list[Problem]) -> dict | None:
    def image_mask(d: dict[str, str]):
        image = next((d[n] for n in _IMAGE_DIRS if n in d), None)
        mask = next((d[n] for n in _MASK_DIRS if n in d), None)
        return (image, mask) if image and mask else None

    splits, sources = {}, {}
    for lower, path in sorted(dirs.items()):
        if lower in _SPLIT_NAMES:
            folders = image_mask(_subdirs(path))
            if folders:
                split = _SPLIT_NAMES[lower]
                if split in sources:  # test/ and testing/: which one is meant is not ours to guess
                    raise DataError(
                        f"{os.path.dirname(path)}: two folders for the {split} split, {sources[split]} and "
                        f"{path}; keep one (or pass --data IMAGES MASKS)"
                    )
                sources[split] = path
                splits[split] = pair_folders(*folders, problems, split)
    if splits:
        return splits
    folders = image_mask(dirs)
    if folders:
        return {"train": pair_folders(*folders, problems, "train")}
    return None


def discover_pairs(path: str, masks: str | None = None) -> Discovery:
    """Pairs per split found under `path` (or in the explicit `path` images / `masks` folders)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise DataError(f"{path}: not a folder (pass the folder that holds the data set)")
    problems: list[Problem] = []
    if masks is not None:
        masks = os.path.abspath(os.fspath(masks))
        if not os.path.isdir(masks):
            raise DataError(f"{masks}: not a folder (pass the folder that holds the masks)")
        splits = {"all": pair_folders(path, masks, problems, "all")}
        return Discovery(path, "folders", splits, problems)
    dirs = _subdirs(path)
    isic = _isic(path, dirs, problems)
    if isic:
        layout, splits = isic
    else:
        splits = _simple(dirs, problems)
        layout = "simple"
        if splits is None:
            raise DataError(
                f"{path}: no data set layout recognised. Expected ISIC 2016/2017/2018 folders as "
                "unzipped (e.g. ISIC2018_Task1-2_Training_Input + ISIC2018_Task1_Training_GroundTruth), "
                "{training,testing}/{image,label}, or pass an images folder and a masks folder"
            )
    ordered = {name: splits[name] for name in SPLIT_ORDER if name in splits}
    return Discovery(path, layout, ordered, problems)
