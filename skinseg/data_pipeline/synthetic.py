"""A synthetic dermoscopy-like data set, so every command works with no download.

Each image: skin-toned background with low-frequency shading and pores, an irregular pigmented
lesion (several harmonics on its outline, sometimes two lobes) with variegated brown colour, a
darker core, globules and now and then a blue-grey veil, a fuzzy border, hairs drawn over it,
vignetting or the black corners of a dermoscope's round field, sensor noise, and JPEG compression.
The mask is the exact lesion outline, before the border is blurred. Image i depends only on
(seed, i), so sets of different sizes share their first images.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import cv2
import numpy as np

from skinseg.core.atomic import read_json, write_json
from skinseg.core.locking import wait_lock
from skinseg.data_pipeline.image_io import write_image

VERSION = 1
_SKIN = np.array([[236, 200, 192], [226, 186, 168], [214, 168, 146], [242, 214, 204], [198, 148, 122]])
_BROWN = np.array([[160, 88, 58], [132, 70, 44], [106, 54, 34], [82, 44, 30], [178, 110, 76]])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features about `scale` pixels wide."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)))
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-8)


def _lesion_shape(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = np.zeros(shape, bool)
    lobes = 1 if rng.random() < 0.75 else 2
    base = rng.uniform(0.16, 0.44) * min(h, w)
    cy, cx = h / 2 + rng.uniform(-0.15, 0.15) * h, w / 2 + rng.uniform(-0.15, 0.15) * w
    for lobe in range(lobes):
        radius = base * (1.0 if lobe == 0 else rng.uniform(0.5, 0.8))
        oy, ox = (0.0, 0.0) if lobe == 0 else rng.uniform(-0.8, 0.8, 2) * base
        theta = np.arctan2(yy - cy - oy, xx - cx - ox)
        dist = np.hypot(yy - cy - oy, xx - cx - ox)
        outline = np.ones_like(theta)
        for k in range(2, 9):
            outline += rng.uniform(0, 0.22 / k**0.8) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        stretch = rng.uniform(0.75, 1.25)
        angle = rng.uniform(0, np.pi)
        outline *= 1 + (stretch - 1) * np.cos(2 * (theta - angle))
        mask |= dist < radius * outline
    return mask


def _draw_hairs(rng: np.random.Generator, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    for _ in range(rng.integers(0, 12) if rng.random() < 0.6 else 0):
        start = rng.uniform([0, 0], [w, h])
        direction = rng.uniform(-1, 1, 2)
        direction /= np.linalg.norm(direction) + 1e-8
        length = rng.uniform(0.3, 1.2) * max(h, w)
        bend = rng.normal(0, 0.2 * length, 2)
        t = np.linspace(0, 1, 24)[:, None]
        end = start + direction * length
        ctrl = (start + end) / 2 + bend
        points = ((1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end) * 16
        colour = tuple(int(c) for c in rng.uniform([20, 15, 10], [70, 50, 40]))
        cv2.polylines(
            image,
            [points.astype(np.int32)],
            False,
            colour,
            int(rng.integers(1, 3)),
            cv2.LINE_AA,
            shift=4,
        )


def synthetic_pair(
    seed: int, index: int, size: tuple[int, int] = (192, 256)
) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, bool mask) of the synthetic set."""
    rng = np.random.default_rng([seed, index, VERSION])
    h, w = size
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3)
    shade = 1 + 0.06 * _smooth_noise(rng, size, 48) + 0.02 * _smooth_noise(rng, size, 3)
    image = skin[None, None, :] * shade[:, :, None]

    mask = _lesion_shape(rng, size)
    brown = _BROWN[rng.integers(len(_BROWN))] + rng.normal(0, 10, 3)
    variegation = (
        1 + 0.15 * _smooth_noise(rng, size, rng.uniform(6, 20)) + 0.1 * _smooth_noise(rng, size, 2.5)
    )
    dist_in = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    core = 1 - 0.35 * np.clip(dist_in / (dist_in.max() + 1e-8), 0, 1) ** 0.7
    lesion = brown[None, None, :] * (variegation * core)[:, :, None]
    if rng.random() < 0.3:  # blue-white veil
        veil = np.clip(_smooth_noise(rng, size, 16), 0, None)[:, :, None] * 0.4
        lesion = lesion * (1 - veil) + np.array([105, 115, 140]) * veil
    for _ in range(rng.integers(0, 25)):  # dots and globules
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            break
        k = rng.integers(len(ys))
        cv2.circle(
            lesion,
            (int(xs[k]), int(ys[k])),
            int(rng.integers(1, 4)),
            tuple(float(c) for c in brown * rng.uniform(0.3, 0.6)),
            -1,
            cv2.LINE_AA,
        )

    blur = rng.uniform(1.0, 4.0)
    alpha = cv2.GaussianBlur(mask.astype(np.float64), (0, 0), blur)[:, :, None]
    alpha *= rng.uniform(0.8, 1.0)  # some lesions are faint
    image = image * (1 - alpha) + lesion * alpha
    _draw_hairs(rng, image)

    yy, xx = np.mgrid[0:h, 0:w]
    radial = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    image *= (1 - rng.uniform(0.05, 0.3) * radial**2)[:, :, None]
    if rng.random() < 0.35:  # the dermoscope's round field of view
        field = cv2.GaussianBlur((radial < rng.uniform(1.0, 1.3)).astype(np.float64), (0, 0), 2)
        image *= (0.06 + 0.94 * field)[:, :, None]
    image += rng.normal(0, rng.uniform(1, 5), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def generate_synthetic(
    root: str,
    n_train: int = 320,
    n_test: int = 80,
    seed: int = 0,
    size: tuple[int, int] = (192, 256),
) -> str:
    """Write the set to `root` in the {training,testing}/{image,label} layout, atomically
    (built in a temporary folder, then renamed), and return `root`."""
    root = os.path.abspath(root)
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        index = 0
        for split, count in (("training", n_train), ("testing", n_test)):
            os.makedirs(os.path.join(tmp, split, "image"))
            os.makedirs(os.path.join(tmp, split, "label"))
            for _ in range(count):
                image, mask = synthetic_pair(seed, index, size)
                name = f"SYN_{index:07d}"
                write_image(os.path.join(tmp, split, "image", f"{name}.jpg"), image, quality=92)
                write_image(
                    os.path.join(tmp, split, "label", f"{name}_segmentation.png"),
                    mask.astype(np.uint8) * 255,
                )
                index += 1
        write_json(
            os.path.join(tmp, "synthetic.json"),
            {
                "version": VERSION,
                "seed": seed,
                "train": n_train,
                "test": n_test,
                "size": list(size),
            },
        )
        if os.path.isdir(root):
            shutil.rmtree(root)
        os.rename(tmp, root)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return root


def data_home() -> str:
    return os.environ.get("SKINSEG_HOME", os.path.join(os.path.expanduser("~"), ".cache", "skinseg"))


def default_data(seed: int = 0, n_train: int = 320, n_test: int = 80) -> str:
    """The embedded default data set, generated on first use (by one process at a time: a second
    one waits, then finds it made)."""
    root = os.path.join(data_home(), f"synthetic-v{VERSION}-seed{seed}-{n_train}-{n_test}")
    if _complete(root):
        return root
    os.makedirs(data_home(), exist_ok=True)
    with open(root + ".lock", "a") as lock:
        wait_lock(lock)
        if not _complete(root):
            generate_synthetic(root, n_train, n_test, seed)
    return root


def _complete(root: str) -> bool:
    try:
        return read_json(os.path.join(root, "synthetic.json"))["version"] == VERSION
    except (OSError, ValueError, KeyError, TypeError):
        return False
