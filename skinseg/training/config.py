"""A run's whole configuration: one frozen dataclass, saved as config.json, reloaded on resume.

Each field is declared once, here, with what the command line needs (group, help, choices):
`train.py`'s options are generated from these declarations. Importing this module is cheap (no
TensorFlow), so `train.py --help` answers at once."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields

from skinseg.core.atomic import read_json, write_json
from skinseg.core.errors import SkinsegError
from skinseg.data_pipeline.preprocess import Preprocessing
from skinseg.models.registry import check_geometry, model_names, resolve
from skinseg.training.recipes import recipe_options

GROUPS = {
    "data": "data",
    "model": "model",
    "optimisation": "optimisation",
    "run": "run",
}
REFERENCE_CLAHE_RANGE = (1.0, 4.0)  # albumentations 0.5.2's CLAHE(clip_limit=4.0): U(1, 4) per call
REFERENCE_CLAHE_CLIP = 2.5  # its mean: the fixed clip outside training
DEFAULT_CLAHE_CLIP = 2.0
MONITORS = ("val_dice", "val_loss", "dice", "loss")  # the metrics training logs


class ConfigError(SkinsegError, ValueError):
    """A configuration that cannot be run; the message names the option or the file."""


AUTO_FILTERS = 0  # --max-filters auto: settled against the memory there is when the run starts


def _filters(text: str) -> int | None:
    """--max-filters: auto (0), none (None: the reference's widths) or a number."""
    if text.lower() == "auto":
        return AUTO_FILTERS
    return None if text.lower() in ("none", "0") else int(text)


def option(default, group: str, help: str, **cli):
    """A RunConfig field with its command-line declaration; `cli=False` for record-only fields."""
    return field(default=default, metadata={"group": group, "help": help, **cli})


@dataclass(frozen=True)
class RunConfig:
    # data
    data: tuple[tuple[str, ...], ...] | None = option(
        None,
        "data",
        "data set folder (ISIC 2016/2017/2018 as unzipped, or {training,testing}/{image,label}), or an "
        "images folder and a masks folder; repeat --data to train on several sets (validation carved "
        "and test kept per set; default: the built-in synthetic set)",
        nargs="+",
        action="append",
        metavar="PATH",
    )
    image_size: int = option(128, "data", "training resolution in pixels")
    val_fraction: float = option(0.1, "data", "share of the training data held out for validation")
    val_from: str = option(
        "auto",
        "data",
        "validation split: layout (the data set's own, e.g. ISIC 2017/2018), train (carved from the "
        "training split), auto (layout when it has one)",
        choices=("auto", "layout", "train"),
    )
    fit: str = option(
        "stretch",
        "data",
        "how an image meets the square input: stretch (as the reference), or pad (keep its aspect "
        "ratio, centred, padded with black; predictions are cut back before resizing to the original)",
        choices=("stretch", "pad"),
    )
    clahe: bool = option(False, "data", "CLAHE on every image, at train, test and inference time")
    clahe_clip: float = option(
        2.0,
        "data",
        "CLAHE clip limit (--aug-policy reference: 2.5 at validation, test and prediction, the mean of "
        "its training draws from U(1, 4), as albumentations 0.5.2 drew them)",
    )
    color_constancy: bool = option(
        False, "data", "Shades-of-Gray colour constancy on every image (also inside the exports)"
    )
    cache: str = option(
        "auto",
        "data",
        "where decoded, resized images are cached; auto: memory when they fit in a quarter of the "
        "available RAM, else disk",
        choices=("auto", "memory", "disk", "none"),
    )
    skip_bad: bool = option(False, "data", "leave out unusable files instead of stopping")
    allow_overlap: bool = option(
        False,
        "data",
        "train even when an image is in two splits (by ID or by pixels; recorded in split.json)",
    )
    allow_empty_masks: bool = option(
        False,
        "data",
        "train even when every mask of a split is empty (no lesion pixel): usually masks whose lesion "
        "was not read as such",
    )
    exclude: str = option(
        "",
        "data",
        "a file of image IDs (one per line, # comments) left out of every split of every data set, "
        "e.g. a hold-out no model may see (recorded in split.json)",
        metavar="FILE",
    )
    folds: int = option(
        0,
        "data",
        "K-fold cross-validation: the training data (with a layout's own validation split) is cut into "
        "K folds stratified by lesion size; the run of fold I trains on the others (its validation "
        "carved from them) and is tested on fold I, out of fold. train.py --folds K trains all K runs "
        "(OUT-f0 ...); 0 = off",
        metavar="K",
    )
    fold: int | None = option(
        None, "data", "with --folds K: train only fold I (0 ... K-1)", type=int, metavar="I"
    )
    # model
    model: str = option("baseline", "model", f"model preset: {', '.join(model_names())}", metavar="NAME")
    width: int | None = option(
        None,
        "model",
        "override the preset's width (UNet first-level filters, DeepLab ASPP filters, HarDNet RFB channels)",
        type=int,
    )
    depth: int | None = option(None, "model", "override the UNet preset's number of levels", type=int)
    max_filters: int | None = option(
        AUTO_FILTERS,
        "model",
        "UNet channel cap: auto (the reference's widths when the run's estimated memory fits the GPU's "
        "or this machine's, else the widest cap that fits, said loudly and recorded), none (the "
        "reference's widths or an error), or N",
        type=_filters,
        metavar="auto|none|N",
        shown_default="auto",
    )
    padding: str = option(
        "reflect",
        "model",
        "UNet convolution padding: reflect (the reference) or zeros (about 15%% faster on a CPU)",
        choices=("reflect", "zeros"),
    )
    backbone: str = option(
        "resnet101",
        "model",
        "DeepLabV3+ backbone, complete and dilated to output stride 16",
        choices=("resnet101", "resnet50"),
    )
    backbone_weights: str = option(
        "none",
        "model",
        "imagenet, none, or a local weights file (DeepLab: its ResNet; HarDNet: encoder); none trains "
        "from scratch, as the reference",
        metavar="WEIGHTS",
    )
    init_from: str = option(
        "",
        "model",
        "fine-tune: start from the weights of pretrained (the shipped model), a run folder or a .keras "
        "file; the architecture and preprocessing come from its records unless typed, and a network "
        "that does not fit is refused with the reason (recorded in config.json with its digest)",
        metavar="SOURCE",
    )
    init: str = option(
        "keras",
        "model",
        "weight initialisation: keras (Keras' defaults: Glorot-uniform kernels, zero biases) or reference "
        "(the reference's PyTorch code: Kaiming-normal for the UNet's and for DeepLab's ResNet and ASPP "
        "convolutions, PyTorch's defaults elsewhere)",
        choices=("keras", "reference"),
    )
    # optimisation
    epochs: int = option(50, "optimisation", "epochs")
    batch_size: int = option(16, "optimisation", "global batch size (split across replicas)")
    lr: float = option(1e-3, "optimisation", "learning rate")
    optimizer: str = option("adam", "optimisation", "optimizer", choices=("adam", "adamw", "sgd"))
    epsilon: float = option(
        1e-7, "optimisation", "Adam/AdamW epsilon (Keras' default 1e-7; the reference's PyTorch Adam: 1e-8)"
    )
    weight_decay: float = option(1e-4, "optimisation", "AdamW weight decay")
    loss: str = option(
        "bce",
        "optimisation",
        "loss (bce as the reference)",
        choices=("bce", "dice", "bce_dice", "focal", "structure"),
    )
    aug: bool = option(
        False,
        "optimisation",
        "augmentation on the accelerator: flips, 90-degree rotations, rotation, zoom, translation, "
        "brightness/contrast/hue",
    )
    aug_policy: str = option(
        "default",
        "optimisation",
        "with --aug: default, strong (any rotation, zoom +-25 percent, stronger colour and saturation: "
        "for images from other cameras), dermoscopy (default plus dermoscopes' uneven light, colour "
        "temperature, dark vignette, hairs and gel bubbles, on the images only), or reference (the "
        "reference's: CLAHE with a clip drawn from U(1, 4), the four 90-degree rotations, its elastic "
        "warp, shift-scale-rotate on half the images)",
        choices=("default", "strong", "dermoscopy", "reference"),
    )
    elastic: float = option(0.0, "optimisation", "with --aug: probability of an elastic warp per image")
    ema: float = option(
        0.0,
        "optimisation",
        "momentum of an exponential moving average of the weights (e.g. 0.99), used for validation, "
        "best.keras and the final model; 0 = off",
        metavar="M",
    )
    flooding: float = option(0.0, "optimisation", "flood level b of |L - b| + b; 0 = off", metavar="B")
    flooding_start: int = option(0, "optimisation", "first epoch with flooding")
    lr_schedule: str = option(
        "none",
        "optimisation",
        "step: x0.1 every 30 epochs (as the reference); cosine: linear warm-up then cosine; plateau: "
        "halve on a stalled validation loss",
        choices=("none", "step", "cosine", "plateau"),
    )
    step_every: int = option(30, "optimisation", "step schedule period in epochs")
    step_factor: float = option(0.1, "optimisation", "step schedule factor")
    warmup_epochs: int = option(0, "optimisation", "cosine warm-up epochs")
    plateau_patience: int = option(5, "optimisation", "plateau schedule patience in epochs")
    mixed_precision: bool = option(False, "optimisation", "mixed_float16 (for GPUs)")
    # run
    seed: int = option(0, "run", "seeds Python, NumPy, TensorFlow, shuffling and augmentation")
    deterministic: bool = option(False, "run", "TensorFlow op determinism (slower)")
    monitor: str = option("val_dice", "run", "metric that selects best.keras", choices=MONITORS)
    mask_step: str = option(
        "validation",
        "run",
        "how probabilities become masks: validation (threshold, largest component and hole filling "
        "chosen on the validation split after training) or fixed (threshold 0.5, no clean-up: the "
        "reference's rounding)",
        choices=("validation", "fixed"),
    )
    early_stopping: int = option(
        0, "run", "stop after PATIENCE epochs without improvement; 0 = off", metavar="PATIENCE"
    )
    checkpoint_every: int = option(
        1, "run", "epochs between last.keras/resume checkpoints (best.keras whenever it improves)"
    )
    strategy: str = option(
        "auto",
        "run",
        "auto: MirroredStrategy when several GPUs are visible",
        choices=("auto", "default", "mirrored", "multiworker"),
    )
    logical_cpus: int = option(0, "run", "split the CPU into N logical devices (tests tf.distribute)")
    tensorboard: bool = option(False, "run", "write TensorBoard logs to the run folder")
    out: str = option("", "run", "run folder (default: runs/<name derived from the options>)", metavar="DIR")
    recipe: str = option(
        "none",
        "run",
        "start from a named set of options (best: the best measured CPU recipe; reference: the "
        "reference table's baseline); options you type override it",
        choices=("none", "best", "reference"),
    )
    created_with: dict = field(default_factory=dict, metadata={"cli": False})  # library versions
    # the memory estimate that settled max_filters (training.estimate.fit_capacity), for the record
    capacity: dict = field(default_factory=dict, metadata={"cli": False})
    # --init-from's file as used: {"source", "path", "sha256"} (training.init_from.resolve_source)
    init_source: dict = field(default_factory=dict, metadata={"cli": False})

    def __post_init__(self):
        if self.aug and self.aug_policy == "reference" and not self.clahe:
            # The reference's policy begins with CLAHE (clip drawn from U(1, 4) in training); a
            # network trained so is fed CLAHE at the mean clip everywhere else (unless a clip was
            # asked for).
            object.__setattr__(self, "clahe", True)
            if self.clahe_clip == DEFAULT_CLAHE_CLIP:
                object.__setattr__(self, "clahe_clip", REFERENCE_CLAHE_CLIP)
        if isinstance(self.data, (str, os.PathLike)):  # RunConfig(data="ISIC2018/") from Python
            object.__setattr__(self, "data", ((os.fspath(self.data),),))
        elif self.data and all(isinstance(p, (str, os.PathLike)) for p in self.data):  # (images, masks)
            object.__setattr__(self, "data", (tuple(map(os.fspath, self.data)),))
        elif self.data is not None:
            object.__setattr__(self, "data", tuple(tuple(map(os.fspath, s)) for s in self.data) or None)
        resolve(self.model)  # an unknown name lists the valid ones
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        checks = (
            (self.epochs >= 1, f"epochs must be at least 1; got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1; got {self.batch_size}"),
            (self.image_size >= 16, f"image_size must be at least 16; got {self.image_size}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1); got {self.val_fraction}"),
            (self.flooding >= 0, f"flooding level must be >= 0; got {self.flooding}"),
            (0.0 <= self.elastic <= 1.0, f"elastic must be a probability in [0, 1]; got {self.elastic}"),
            (0.0 <= self.ema < 1.0, f"ema momentum must be in [0, 1); got {self.ema}"),
            (self.aug or self.aug_policy == "default", f"--aug-policy {self.aug_policy} needs --aug"),
            (self.epsilon > 0, f"epsilon must be positive; got {self.epsilon}"),
            (self.step_factor > 0, f"step_factor must be positive; got {self.step_factor}"),
            (self.seed >= 0, f"seed must be >= 0; got {self.seed}"),
            (self.image_size <= 4096, f"image_size must be at most 4096; got {self.image_size}"),
            (
                self.init == "keras" or self.backbone_weights in ("none", "", None),
                "--init reference draws every convolution anew: it would overwrite --backbone-weights "
                f"{self.backbone_weights}; use one or the other",
            ),
            (0 < self.clahe_clip < float("inf"), f"clahe_clip must be positive; got {self.clahe_clip}"),
            (
                not (self.ema and self.strategy == "multiworker"),
                "--ema with --strategy multiworker is not supported (its weight swap is untested there)",
            ),
            (self.lr > 0, f"lr must be positive; got {self.lr}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1; got {self.checkpoint_every}"),
            (self.step_every >= 1, f"step_every must be at least 1; got {self.step_every}"),
            (self.plateau_patience >= 1, f"plateau_patience must be at least 1; got {self.plateau_patience}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0; got {self.warmup_epochs}"),
            (self.flooding_start >= 0, f"flooding_start must be >= 0; got {self.flooding_start}"),
            (self.early_stopping >= 0, f"early_stopping must be >= 0; got {self.early_stopping}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}"),
            (self.logical_cpus >= 0, f"logical_cpus must be >= 0; got {self.logical_cpus}"),
            (self.folds == 0 or self.folds >= 2, f"folds must be 0 (off) or at least 2; got {self.folds}"),
            (
                self.fold is None or (self.folds and 0 <= self.fold < self.folds),
                f"fold must be in 0 ... {max(self.folds - 1, 0)} with --folds {self.folds}; got {self.fold}"
                if self.folds
                else "--fold needs --folds K",
            ),
            (
                not (self.init_from and self.backbone_weights not in ("none", "", None)),
                "--init-from loads every weight of the network: --backbone-weights would be overwritten",
            ),
            (
                not (self.init_from and self.init == "reference"),
                "--init-from loads every weight of the network: --init reference would be overwritten",
            ),
            (
                self.max_filters is None or self.max_filters >= 0,
                "max_filters must be auto, none or at least 1",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            check_geometry(self.model, self.image_size, self.width, self.depth, self.padding)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for source in self.data or ():
            if not 1 <= len(source) <= 2:
                raise ConfigError(
                    f"--data takes a data set folder, or an images folder and a masks folder; got {list(source)}"
                )

    @property
    def preprocessing(self):
        return Preprocessing(
            clahe=self.clahe, color_constancy=self.color_constancy, fit=self.fit, clahe_clip=self.clahe_clip
        )

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["data"] = [list(source) for source in self.data] if self.data else None
        return out

    @classmethod
    def from_json(cls, data: dict, source: str = "config") -> RunConfig:
        """The configuration a config.json holds; unknown keys and wrong types are errors that
        name the file and the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: not a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (not options of this version)")
        values = {}
        for key, value in data.items():
            try:
                values[key] = coerce_field(known[key], value)
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: {key} = {value!r} is not a valid value") from None
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def save(self, path: str) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> RunConfig:
        try:
            data = read_json(path)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: unreadable ({err})") from None
        return cls.from_json(data, path)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def recorded(self) -> dict:
        """What identifies the run's training: everything but where it lives, its library
        versions, its length (which --resume --epochs may extend) and the recipe's name (its values are
        in the other fields)."""
        skip = ("out", "created_with", "epochs", "recipe", "capacity", "init_source")
        return {k: v for k, v in self.to_json().items() if k not in skip}


def coerce_field(f, value):
    """A JSON value as the field's declared type (ints stay ints, lists become tuples)."""
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise TypeError
    if f.name == "data":
        if not isinstance(value, list) or not all(
            isinstance(s, list) and all(isinstance(p, str) for p in s) for s in value
        ):
            raise TypeError
        return tuple(tuple(s) for s in value)
    if kind == "dict":
        if not isinstance(value, dict):
            raise TypeError
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if not isinstance(value, str):
        raise TypeError
    return value


# --- the command line, generated from the fields ------------------------------------------------


def add_options(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """Every RunConfig option, in its group. With `suppress_defaults`, options not given stay
    out of the namespace (to tell which ones a user typed)."""
    groups = {name: parser.add_argument_group(f"{title} options") for name, title in GROUPS.items()}
    for f in fields(RunConfig):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs = {"dest": f.name, "help": meta["help"]}
        if isinstance(f.default, bool):
            # --aug / --no-aug: a recipe's switch can be turned off from the command line
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            for key in ("choices", "nargs", "metavar", "action"):
                if key in meta:
                    kwargs[key] = meta[key]
            if "type" in meta:
                kwargs["type"] = meta["type"]
            elif isinstance(f.default, (int, float)) and "nargs" not in meta:
                kwargs["type"] = type(f.default)
            if "metavar" not in kwargs and "choices" not in kwargs:
                kwargs["metavar"] = "X" if kwargs.get("type") is float else "N"
            if "shown_default" in meta:  # a sentinel's name, not its value
                kwargs["help"] += f" (default: {meta['shown_default']})"
            elif f.default is not None and f.default != "":
                kwargs["help"] += " (default: %(default)s)"
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
        else:
            kwargs["default"] = f.default
        groups[meta["group"]].add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, given: set[str] | None = None) -> RunConfig:
    """The configuration of parsed options; with `--recipe`, the recipe's values replace the
    defaults of the options not in `given` (those typed on the command line)."""
    values = {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}
    if values.get("recipe", "none") != "none":
        typed = given if given is not None else set()
        recipe = recipe_options(values["recipe"])
        values.update({k: v for k, v in recipe.items() if k not in typed})
        if "aug_policy" in recipe and "aug_policy" not in typed and not values.get("aug"):
            # the recipe's augmentation policy goes with its augmentation: --no-aug drops both
            values["aug_policy"] = next(f.default for f in fields(RunConfig) if f.name == "aug_policy")
    if values.get("data"):
        values["data"] = tuple(tuple(os.path.abspath(p) for p in source) for source in values["data"])
    return RunConfig(**values)


# Folder names that say what a folder holds, not which data set it is.
_GENERIC = {
    "image",
    "images",
    "img",
    "imgs",
    "training",
    "train",
    "testing",
    "test",
    "validation",
    "val",
    "all",
}


def data_label(config: RunConfig) -> str:
    """The data set(s) a run trains on, as its name shows them: each --data folder's name, or
    `synthetic` (the built-in set)."""
    if not config.data:
        return "synthetic"
    names = []
    for source in config.data:
        folder = os.path.basename(os.path.normpath(source[0])) or "data"
        if len(source) == 2:  # an images folder and a masks folder: name their parent when generic
            path = os.path.normpath(source[0])
            while os.path.basename(path).lower() in _GENERIC and os.path.basename(os.path.dirname(path)):
                path = os.path.dirname(path)  # .../isic2018_extra/training/image -> isic2018_extra
            folder = os.path.basename(path)
        names.append(folder)
    return "+".join(names)


def default_run_name(config: RunConfig) -> str:
    """Readable and unique enough: the preset, what differs from the defaults, and the data set
    (the same options on two data sets are two runs)."""
    parts = [config.model]
    if config.width:
        parts.append(f"w{config.width}")
    if config.depth:
        parts.append(f"d{config.depth}")
    if config.image_size != 128:
        parts.append(f"{config.image_size}px")
    if config.aug:
        parts.append("aug" if config.aug_policy == "default" else f"aug{config.aug_policy}")
    if config.fit != "stretch":
        parts.append(config.fit)
    if config.clahe:
        parts.append("clahe")
    if config.color_constancy:
        parts.append("cc")
    if config.flooding:
        parts.append(f"flood{config.flooding:g}")
    if config.lr_schedule != "none":
        parts.append(f"lr{config.lr_schedule}")
    if config.loss != "bce":
        parts.append(config.loss)
    if config.optimizer != "adam":
        parts.append(config.optimizer)
    if config.ema:
        parts.append(f"ema{config.ema:g}")
    if config.init_from:
        parts.append("ft")
    parts.append(data_label(config))
    if config.folds:  # NAME-cv5 for the whole cross-validation; its runs NAME-cv5-f0 ...
        parts.append(f"cv{config.folds}" if config.fold is None else f"cv{config.folds}-f{config.fold}")
    if config.seed:
        parts.append(f"s{config.seed}")
    return "-".join(parts)
