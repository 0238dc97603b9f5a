"""One training run, from configuration to a complete run folder:
config.json, split.json, history.csv, best.keras, last.keras, resume/, curves.png, train.log."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from data_pipeline.augment import build_augmenter
from data_pipeline.checks import check_pairs
from data_pipeline.discovery import Pair, discover_pairs
from data_pipeline.errors import DataError
from data_pipeline.split import carve_validation, read_split, write_split
from data_pipeline.synthetic import default_data
from data_pipeline.tfdata import make_dataset, resolve_cache, steps_per_epoch
from losses import get_loss
from models.registry import build_model
from training.callbacks import (
    Flooding,
    NonFiniteGuard,
    RunRecorder,
    learning_rate,
    read_history,
    read_resume_state,
    restore_plateau,
    schedule_callbacks,
)
from training.config import RunConfig, default_run_name
from training.distribute import make_strategy
from training.trainer import DiceScore, SegmentationTrainer

log = logging.getLogger("skinseg")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (exists, or has nothing to resume)."""


class TrainingDiverged(RuntimeError):
    def __init__(self, epoch: int, step: int, run_dir: str, last_good: int):
        self.epoch, self.step = epoch, step
        kept = (
            f"the last good checkpoint ({os.path.join(run_dir, 'last.keras')}, epoch {last_good}) is kept"
            if last_good
            else "no epoch had completed, so there is no checkpoint"
        )
        super().__init__(
            f"loss became NaN/Inf at epoch {epoch}, step {step}; training stopped and {kept}. "
            "Try a lower --lr, --loss bce_dice, or without --mixed-precision"
        )


@dataclass
class RunResult:
    run_dir: str
    completed_epochs: int
    best_epoch: int
    best: float
    history: list[dict]


def data_root(config: RunConfig) -> str:
    return config.data or default_data()


def _problem_lines(problems, limit=20) -> str:
    lines = [f"  {p.file}: {p.problem}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (python -m data_pipeline inspect lists all)")
    return "\n".join(lines)


def usable_pairs(pairs: list[Pair], name_problems, config: RunConfig, what: str) -> tuple[list[Pair], list]:
    """Decode-check `pairs`; stop on any unusable file unless `skip_bad`, which drops them."""
    infos, problems = check_pairs(pairs, decode_size=(config.image_size, config.image_size))
    errors = [p for p in [*name_problems, *problems] if p.severity == "error"]
    for warning in (p for p in problems if p.severity == "warning"):
        log.debug("%s: %s", warning.file, warning.problem)
    if errors and not config.skip_bad:
        raise DataError(
            f"{len(errors)} problem(s) in the {what} data:\n{_problem_lines(errors)}\n"
            "Fix or remove these files, or pass --skip-bad to leave them out"
        )
    if errors:
        log.warning("leaving out %d unusable file(s) (--skip-bad):\n%s", len(errors), _problem_lines(errors))
    return [i.pair for i in infos], errors


def prepare_split(config: RunConfig, run_dir: str) -> dict[str, list[Pair]]:
    """Discover, check, carve the validation split and write split.json."""
    root = data_root(config)
    found = discover_pairs(root, config.masks)
    train_name = "train" if "train" in found.splits else "all" if "all" in found.splits else None
    if train_name is None:
        raise DataError(f"{root}: no training split found (splits: {', '.join(found.splits) or 'none'})")
    train, errors = usable_pairs(found.splits[train_name], found.errors_of(train_name), config, "training")
    test, test_errors = usable_pairs(found.splits.get("test", []), found.errors_of("test"), config, "test")
    if not train:
        raise DataError(f"{root}: no usable training pairs")
    train, val = carve_validation(train, config.val_fraction, config.seed)
    splits = {"train": train, "validation": val, "test": test}
    write_split(
        os.path.join(run_dir, "split.json"),
        splits,
        data=root,
        layout=found.layout,
        seed=config.seed,
        val_fraction=config.val_fraction,
        excluded=[p.to_dict() for p in [*errors, *test_errors]],
    )
    log.info(
        "data %s (%s): %d train, %d validation, %d test pairs",
        root,
        found.layout,
        len(train),
        len(val),
        len(test),
    )
    return splits


def _environment() -> dict:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "argv": sys.argv,
    }


def open_run_folder(config: RunConfig, resume: bool, overwrite: bool) -> tuple[RunConfig, str]:
    """Returns the configuration to run (the stored one when resuming) and the run folder."""
    run_dir = os.path.abspath(config.out or os.path.join("runs", default_run_name(config)))
    config_path = os.path.join(run_dir, "config.json")
    _remove_stale_temporaries(run_dir)  # a run killed before config.json landed leaves only these
    if resume:
        if not os.path.exists(config_path):
            raise RunFolderError(f"{run_dir}: nothing to resume (no config.json); start it without --resume")
        return RunConfig.load(config_path), run_dir
    if os.path.exists(run_dir) and os.listdir(run_dir):
        if not overwrite:
            raise RunFolderError(
                f"{run_dir} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or --out to choose another folder"
            )
        if not os.path.exists(config_path):  # never delete a folder train.py did not make
            raise RunFolderError(
                f"{run_dir} is not empty and is not a run folder (no config.json); "
                "refusing to replace it, choose another --out"
            )
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    config = config.replace(out=run_dir, created_with=_environment())
    config.save(config_path)
    return config, run_dir


def _remove_stale_temporaries(run_dir: str) -> None:
    """A killed run may leave `.tmp-*` files (never the real names: those are renamed into place)."""
    for folder in (run_dir, os.path.join(run_dir, "resume")):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith(".tmp-"):
                    os.remove(os.path.join(folder, name))


def _attach_log(run_dir: str) -> logging.Handler:
    handler = logging.FileHandler(os.path.join(run_dir, "train.log"), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def make_optimizer(config: RunConfig, steps: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(config, steps)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def run_training(
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    network: keras.Model | None = None,
    verbose="auto",
) -> RunResult:
    """Train (or resume) one run. `network` replaces the registry's model (tests)."""
    config, run_dir = open_run_folder(config, resume, overwrite)
    handler = _attach_log(run_dir)
    try:
        return _train(config, run_dir, resume, network, verbose)
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(config: RunConfig, run_dir: str, resume: bool, network, verbose) -> RunResult:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")

    split_path = os.path.join(run_dir, "split.json")
    state = read_resume_state(run_dir) if resume else None
    if resume and os.path.exists(split_path):
        splits = read_split(split_path)
        log.info("resuming %s after epoch %d", run_dir, state["completed_epochs"] if state else 0)
    else:
        splits = prepare_split(config, run_dir)
    train_pairs, val_pairs = splits["train"], splits["validation"]
    completed = state["completed_epochs"] if state else 0
    if completed >= config.epochs:
        log.info("%s: all %d epochs already done", run_dir, config.epochs)
        rows = read_history(os.path.join(run_dir, "history.csv"))
        return RunResult(run_dir, completed, state["best_epoch"], state["best"], rows)

    steps = steps_per_epoch(len(train_pairs), config.batch_size)
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        network = network or build_model(
            config.model,
            config.image_size,
            width=config.width,
            depth=config.depth,
            max_filters=config.max_filters,
            padding=config.padding,
            backbone=config.backbone,
            backbone_weights=config.backbone_weights,
        )
        augmenter = build_augmenter(config.seed, elastic=config.elastic) if config.aug else None
        trainer = SegmentationTrainer(network, augmenter)
        trainer.compile(
            optimizer=make_optimizer(config, steps),
            loss=get_loss(config.loss),
            metrics=[DiceScore()],
        )
    log.info(
        "model %s: %s parameters; %d replica(s); %d steps per epoch",
        network.name,
        f"{network.count_params():,}",
        strategy.num_replicas_in_sync,
        steps,
    )

    cache = resolve_cache(config.cache, len(train_pairs) + len(val_pairs), config.image_size)
    cache_dir = os.path.join(run_dir, "cache")
    common = {
        "size": config.image_size,
        "batch_size": config.batch_size,
        "cache": cache,
        "cache_dir": cache_dir,
        "preprocessing": config.preprocessing,
    }
    train_ds = make_dataset(train_pairs, training=True, seed=config.seed, **common)
    train_ds = train_ds.skip(completed * steps)  # a resumed run sees the batches it would have seen
    val_ds = make_dataset(val_pairs, training=False, **common) if val_pairs else None

    monitor = config.monitor if val_ds is not None else config.monitor.removeprefix("val_")
    mode = "min" if monitor.endswith("loss") else "max"
    history_rows = read_history(os.path.join(run_dir, "history.csv"))[:completed]
    recorder = RunRecorder(run_dir, monitor, mode, state, history_rows, every=config.checkpoint_every)
    guard = NonFiniteGuard()
    callbacks = [guard, *schedule_callbacks(config)]
    recorder.plateau = next((c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
    if config.flooding:
        callbacks.append(Flooding(config.flooding, config.flooding_start))
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.early_stopping)
        )
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard")))
    callbacks.append(recorder)  # last: sees the learning rate and logs the other callbacks set

    if state:
        _restore(trainer, state, recorder)
    try:
        trainer.fit(
            train_ds,
            epochs=config.epochs,
            initial_epoch=completed,
            steps_per_epoch=steps,
            validation_data=val_ds,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles (seeded)
            verbose=(1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose,
        )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    if guard.failed:
        epoch, step = guard.failed
        raise TrainingDiverged(epoch, step, run_dir, len(recorder.rows))
    log.info(
        "done: %d epochs; best %s %.4f at epoch %d",
        len(recorder.rows),
        monitor,
        recorder.best,
        recorder.best_epoch,
    )
    return RunResult(run_dir, len(recorder.rows), recorder.best_epoch, recorder.best, recorder.rows)


def _restore(trainer: SegmentationTrainer, state: dict, recorder: RunRecorder) -> None:
    """Weights, optimizer slots and step count, augmentation RNG, and schedule state."""
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.load_weights(state["weights_path"])
    for variable, value in zip(trainer.seed_states(), state.get("seed_states", [])):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    restore_plateau(recorder.plateau, state.get("plateau"))
