"""The one path from an image to its mask, and the project's Python API.

    from skinseg import Segmenter
    segmenter = Segmenter.from_pretrained()          # or .from_run("runs/baseline"), .from_file(...)
    mask = segmenter.segment("photo.jpg")            # bool (H, W) at the photo's own size
    mask, probabilities = segmenter.segment(image_array, probabilities=True)

A `Segmenter` owns every step between a decoded image and its mask: the preprocessing the network
was trained with (resize or pad to its input, CLAHE, colour constancy), the network (traced once,
BatchNormalization folded), flip test-time augmentation, resizing the probabilities back onto the
original pixels, and the mask step chosen on validation (threshold, clean-up). `predict.py`,
`evaluate.py`, the post-processing choice and the exports (inference/export.py:
`export(segmenter, folder)`) all go through it.

A saved model is described the same way wherever it lives: a `.keras` file with
`preprocessing.json` and `postprocess.json` beside it. A run folder is one such place (its
best.keras); the shipped model's folder is another (inference/description.py reads them).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from skinseg.core.errors import DataError
from skinseg.core.run_folder import RunFolder
from skinseg.data_pipeline.checks import size_mismatch
from skinseg.data_pipeline.image_io import (
    Decoded,
    content_box,
    read_image,
    read_mask,
    resize_mask,
    to_original,
)
from skinseg.data_pipeline.preprocess import Preprocessing, prepare_image
from skinseg.inference.description import PRETRAINED, Described, PredictError, describe, pretrained_path
from skinseg.inference.network import (
    Forward,
    check_segmenter,
    load_segmenter,
    predict_probabilities,
    stream_predictions,
)
from skinseg.inference.portable import ensemble_network, has_colour_constancy
from skinseg.inference.postprocess import PostProcessing

__all__ = ["PRETRAINED", "Described", "PredictError", "Prediction", "Segmenter", "describe"]


@dataclass(frozen=True)
class Prediction:
    """One image's probabilities at the network's input, and the way back to its pixels."""

    at_input: np.ndarray  # (h, w) float32 lesion probabilities at the network's input size
    original_size: tuple[int, int]  # (height, width) of the image as a viewer shows it
    covers: tuple[int, int]  # what the decoded array covers in original pixels (image_io.Decoded)
    fit: str
    post: PostProcessing

    @functools.cached_property
    def probabilities(self) -> np.ndarray:
        """(H, W) float32 lesion probabilities at the image's original size."""
        return to_original(self.at_input, self.original_size, self.covers, self.fit)

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """(H, W) bool mask at the original size: the mask step applied to `probabilities`."""
        return self.post.apply(self.probabilities)

    @property
    def mask_at_input(self) -> np.ndarray:
        return self.post.apply(self.at_input)


class Segmenter:
    """Image -> preprocessing -> network -> probabilities at original size -> mask."""

    def __init__(
        self,
        network,
        preprocessing: Preprocessing = Preprocessing(),
        post: PostProcessing = PostProcessing(),
        *,
        tta: bool = False,
        source: str | None = None,
        fold: bool = True,
    ):
        """`network`: a keras.Model taking (B, H, W, 3) floats in [0, 1] and returning (B, H, W, 1)
        lesion probabilities. `tta`: average the identity and the three flips. `fold`: run a copy
        with BatchNormalization folded into the convolutions (same outputs to float32 rounding)."""
        check_segmenter(network, source or "the network")
        inside = has_colour_constancy(network)
        if inside and not preprocessing.color_constancy:
            raise PredictError(
                f"{source or 'the network'}: applies colour constancy itself, but its preprocessing "
                f"({preprocessing}) says it was trained without it; its preprocessing.json is not its own"
            )
        self.network = network
        self.preprocessing = preprocessing
        # What the file does not do itself happens here, before it (a portable file: inference.portable).
        self._outside = dataclasses.replace(preprocessing, color_constancy=False) if inside else preprocessing
        self.post = post
        self.tta = tta
        self.source = source
        self.members = (self,)  # an ensemble's: its segmenters (Segmenter.ensemble)
        self._fold = fold
        self._forward = Forward(network, fold=fold)

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.source or self.network.name!r}, input {self.input_size}, "
            f"{self.preprocessing}, mask step: {self.post.describe()}, tta={self.tta})"
        )

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str, *, post: PostProcessing | None = None, **options) -> Segmenter:
        """What `--model` accepts: `pretrained`, a run folder, or a .keras file (with the files
        beside it). `post` replaces the chosen mask step (postprocess.json is then not read);
        `options`: tta, fold."""
        return cls.from_described(describe(model, read_post=post is None), post=post, **options)

    @classmethod
    def from_pretrained(cls, **options) -> Segmenter:
        """The model shipped with the project (skinseg/models/pretrained/MODEL_CARD.md), whatever
        the working folder holds."""
        return cls.load(pretrained_path(), **options)

    @classmethod
    def from_run(cls, run_dir: str, **options) -> Segmenter:
        """A run folder's best network, with the preprocessing it was trained with and the mask
        step chosen on its validation split."""
        if not RunFolder(run_dir).has_config():
            raise PredictError(f"{os.path.abspath(run_dir)}: not a run folder of train.py (no config.json)")
        return cls.load(run_dir, **options)

    @classmethod
    def from_file(cls, path: str, **options) -> Segmenter:
        """A .keras file, described by preprocessing.json and postprocess.json beside it (none:
        no preprocessing beyond the resize, threshold 0.5); in a run folder, its config.json."""
        return cls.load(path, **options)

    @classmethod
    def from_described(cls, described: Described, *, post: PostProcessing | None = None, **options):
        network = load_segmenter(described.path)
        preprocessing = described.preprocessing
        if has_colour_constancy(network) and not described.recorded:
            # a .keras copied on its own: it says itself that it applies colour constancy
            preprocessing = dataclasses.replace(preprocessing, color_constancy=True)
        return cls(
            network,
            preprocessing,
            post if post is not None else described.post,
            source=described.path,
            **options,
        )

    @classmethod
    def load_ensemble(cls, models: list[str], *, post: PostProcessing | None = None, **options) -> Segmenter:
        """Several models (what `--model` accepts, each) as one: Segmenter.ensemble of them."""
        members = [cls.load(model, post=PostProcessing(), **options) for model in models]
        return cls.ensemble(members, post=post, tta=options.get("tta", False))

    @classmethod
    def ensemble(
        cls, members: list[Segmenter], *, post: PostProcessing | None = None, tta: bool = False
    ) -> Segmenter:
        """One segmenter whose probabilities are the mean of its members' (each with TTA when
        `tta`), e.g. the K runs of a cross-validation. The members must take the same input (size
        and preprocessing). Their mask steps were chosen for each alone: the ensemble's is `post`,
        by default threshold 0.5 without clean-up."""
        if len(members) == 1:
            return members[0].with_options(tta=tta, post=post)
        first = members[0]
        for other in members[1:]:
            if other.input_size != first.input_size or other.preprocessing != first.preprocessing:
                raise PredictError(
                    f"an ensemble's models must take the same input: {first.source} takes "
                    f"{first.input_size} with {first.preprocessing}, {other.source} takes "
                    f"{other.input_size} with {other.preprocessing}"
                )
        combined = copy.copy(first)
        # One model, the members' probabilities averaged inside it: what runs here is what an
        # export (or a saved copy) of the ensemble holds.
        combined.network = ensemble_network([m.network for m in members], first.preprocessing)
        combined._outside = (
            dataclasses.replace(first.preprocessing, color_constancy=False)
            if has_colour_constancy(combined.network)
            else first.preprocessing
        )
        combined.members = tuple(members)
        combined.source = " + ".join(str(m.source) for m in members)
        combined.post = post if post is not None else PostProcessing()
        combined.tta = tta
        combined._forward = Forward(combined.network, fold=first._fold)
        return combined

    @property
    def parameters(self) -> int:
        """Parameters of the network (an ensemble's: all its members')."""
        return int(self.network.count_params())

    def with_options(self, *, tta: bool | None = None, post: PostProcessing | None = None) -> Segmenter:
        """The same network (and its traced pass) with another TTA setting or mask step."""
        other = copy.copy(self)
        if tta is not None:
            other.tta = tta
        if post is not None:
            other.post = post
        return other

    # --- the path ---------------------------------------------------------------------------------

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.network.input_shape[1]), int(self.network.input_shape[2])

    def read(self, path: str, full: bool = False) -> Decoded:
        """Decode an image file (a JPEG at a reduced scale still at least the input size, unless
        `full`: the full-size pixels are needed, e.g. for an overlay)."""
        return read_image(path, min_size=None if full else self.input_size)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A decoded uint8 RGB image -> the uint8 network input (resize or pad, CLAHE, colour
        constancy as the network was trained), less what the saved model does itself (colour
        constancy in a portable file)."""
        return prepare_image(image, self.input_size, self._outside)

    def probabilities_at_input(self, inputs: np.ndarray) -> np.ndarray:
        """(B, h, w) probabilities for a batch of prepared uint8 inputs (B, h, w, 3)."""
        return predict_probabilities(self._forward, np.asarray(inputs, np.float32) / 255.0, self.tta)

    def predict(self, image: np.ndarray | str | os.PathLike) -> Prediction:
        """One image (a decoded uint8 RGB array, or a file) -> its Prediction."""
        decoded = self._decoded(image)
        prob = self.probabilities_at_input(self.prepare(decoded.array)[None])[0]
        return self._prediction(prob, decoded)

    def segment(self, image: np.ndarray | str | os.PathLike, *, probabilities: bool = False):
        """The bool (H, W) mask of one image at its own size; with `probabilities`, the pair
        (mask, float32 probabilities at that size)."""
        prediction = self.predict(image)
        return (prediction.mask, prediction.probabilities) if probabilities else prediction.mask

    def stream(
        self,
        items: Iterable,
        load: Callable[[object], tuple[Decoded, object]],
        *,
        batch_size: int = 8,
        workers: int | None = None,
    ) -> Iterator[tuple[object, Prediction | None, object]]:
        """Yields (item, Prediction, extra) for each item, in order; `load(item)` returns the
        decoded image and anything to pass on. Decoding and preprocessing of the next batch run in
        threads while the network works on this one. An item whose `load` raised a DataError comes
        out as (item, None, the error) and the stream goes on."""

        def prepared(item):
            decoded, extra = load(item)
            # Only the geometry travels on: the pixels would hold two batches of full-size images.
            return self.prepare(decoded.array), (dataclasses.replace(decoded, array=None), extra)

        for item, prob, carried in stream_predictions(
            self._forward, items, prepared, batch_size=batch_size, tta=self.tta, workers=workers
        ):
            if prob is None:
                yield item, None, carried
            else:
                decoded, extra = carried
                yield item, self._prediction(prob, decoded), extra

    def stream_pairs(self, pairs: Iterable, *, batch_size: int = 8, keep_original: bool = True):
        """For labelled pairs (data_pipeline.discovery.Pair): yields (pair, Prediction, true mask at
        original size or None, true mask at the network's input size). A mask whose size differs
        from its image's, or a file that cannot be read, raises DataError naming it."""

        def load(pair):
            decoded = self.read(pair.image)
            truth = read_mask(pair.mask)
            if truth.original_size != decoded.original_size:
                raise DataError(f"{pair.mask}: {size_mismatch(decoded, truth)}")
            at_input = resize_mask(truth.array, self.input_size, decoded.covers, self.preprocessing.fit)
            return decoded, (truth.array if keep_original else None, at_input)

        for pair, prediction, extra in self.stream(pairs, load, batch_size=batch_size):
            if prediction is None:
                raise extra
            yield pair, prediction, extra[0], extra[1]

    def input_spacing(self, spacing: tuple[float, float], covers: tuple[int, int]) -> tuple[float, float]:
        """The physical size of one input pixel, for an image of `covers` original pixels whose
        pixels measure `spacing`: it spans covers / (the image's part of the input) pixels."""
        _, _, h, w = content_box(covers, self.input_size, self.preprocessing.fit)
        return spacing[0] * covers[0] / h, spacing[1] * covers[1] / w

    def _decoded(self, image) -> Decoded:
        if isinstance(image, (str, os.PathLike)):
            return self.read(os.fspath(image))
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
            raise PredictError(
                f"segment() takes a uint8 RGB array (H, W, 3) or a file path; got {array.dtype} "
                f"{array.shape} (read files with skinseg.data_pipeline.image_io.read_image)"
            )
        return Decoded(array, array.shape[:2])

    def _prediction(self, prob: np.ndarray, decoded: Decoded) -> Prediction:
        return Prediction(prob, decoded.original_size, decoded.covers, self.preprocessing.fit, self.post)
