"""A run's whole configuration: one frozen dataclass, built from the CLI, saved as config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields

from data_pipeline.atomic import read_json, write_json

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("bce", "dice", "bce_dice", "focal", "structure")
LR_SCHEDULES = ("none", "step", "cosine", "plateau")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
CACHES = ("auto", "memory", "disk", "none")


@dataclass(frozen=True)
class RunConfig:
    model: str = "baseline"
    data: str | None = None  # None: the embedded synthetic set
    masks: str | None = None  # with `data` an images folder: the masks folder
    image_size: int = 128
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4  # adamw only
    loss: str = "bce"
    aug: bool = False
    elastic: float = 0.0  # probability of an elastic warp per image (with --aug)
    clahe: bool = False
    color_constancy: bool = False  # Shades-of-Gray colour constancy in the preprocessing
    flooding: float = 0.0
    flooding_start: int = 0  # epoch from which flooding is active
    lr_schedule: str = "none"
    step_every: int = 30
    step_factor: float = 0.1
    warmup_epochs: int = 0
    plateau_patience: int = 5
    val_fraction: float = 0.1
    seed: int = 0
    deterministic: bool = False
    mixed_precision: bool = False
    width: int | None = None
    depth: int | None = None
    max_filters: int | None = 1024
    padding: str = "reflect"  # UNet convolutions: "reflect" (the reference) or "zeros"
    backbone: str = "resnet101"  # DeepLabV3+
    backbone_weights: str = "none"
    strategy: str = "auto"
    logical_cpus: int = 0
    cache: str = "auto"
    monitor: str = "val_dice"
    early_stopping: int = 0  # patience in epochs; 0 = off
    checkpoint_every: int = 1  # epochs between last.keras / resume states (big models on fast GPUs)
    tensorboard: bool = False
    skip_bad: bool = False
    out: str = ""
    created_with: dict = field(default_factory=dict)  # library versions, for the record

    def __post_init__(self):
        checks = {
            "optimizer": OPTIMIZERS,
            "loss": LOSSES,
            "lr_schedule": LR_SCHEDULES,
            "strategy": STRATEGIES,
            "cache": CACHES,
            "padding": ("reflect", "zeros"),
            "backbone": ("resnet101", "resnet50"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if self.flooding < 0:
            raise ValueError(f"flooding level must be >= 0; got {self.flooding}")

    @property
    def preprocessing(self):
        from data_pipeline.preprocess import Preprocessing

        return Preprocessing(clahe=self.clahe, color_constancy=self.color_constancy)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> RunConfig:
        return cls.from_json(read_json(path))

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


def default_run_name(config: RunConfig) -> str:
    """Readable and unique enough: only what differs from the defaults appears."""
    parts = [config.model]
    if config.width:
        parts.append(f"w{config.width}")
    if config.depth:
        parts.append(f"d{config.depth}")
    if config.image_size != 128:
        parts.append(f"{config.image_size}px")
    if config.aug:
        parts.append("aug")
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
    if config.seed:
        parts.append(f"s{config.seed}")
    return "-".join(parts)


def dumps(config: RunConfig) -> str:
    return json.dumps(config.to_json(), indent=2)
