"""Callbacks: flooding level, LR schedule, non-finite guard, EMA weights, the run recorder (history.csv,
best/last checkpoints, resume state, curves.png, through the RunFolder) and the epoch printer."""

from __future__ import annotations

import logging
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from skinseg.core.atomic import atomic_path
from skinseg.core.faults import fault_point
from skinseg.core.run_folder import file_digest

log = logging.getLogger("skinseg")


class Flooding(keras.callbacks.Callback):
    """Sets the trainer's flood level: `level` from epoch `start` on (0 before)."""

    def __init__(self, level: float, start: int = 0):
        super().__init__()
        self.level, self.start = level, start

    def on_epoch_begin(self, epoch, logs=None):
        self.model.flood_level.assign(self.level if epoch >= self.start else 0.0)


def learning_rate(config, steps_per_epoch: int):
    """The optimizer's learning rate: a float, or a per-step schedule for `cosine` (linear warm-up
    from lr/100 over `warmup_epochs`, then cosine decay to 0 at the last step)."""
    if config.lr_schedule != "cosine":
        return config.lr
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.lr / 100 if warmup else config.lr,
        decay_steps=max(1, total - warmup),
        warmup_target=config.lr if warmup else None,
        warmup_steps=warmup,
    )


def schedule_callbacks(config) -> list[keras.callbacks.Callback]:
    """`step`: x`step_factor` every `step_every` epochs (the reference: x0.1 every 30);
    `plateau`: halve when the validation loss stalls for `plateau_patience` epochs."""
    if config.lr_schedule == "step":
        lr, factor, every = config.lr, config.step_factor, config.step_every
        return [keras.callbacks.LearningRateScheduler(lambda epoch: lr * factor ** (epoch // every))]
    if config.lr_schedule == "plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=0.5,
                patience=config.plateau_patience,
                min_lr=config.lr * 1e-3,
            )
        ]
    return []


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' EMA swap, with the EMA weights in the model from the end of each epoch to the start
    of the next, so that validation, best.keras and last.keras (written by RunRecorder, which
    must come after this) hold the averaged weights, while the raw weights wait in the
    optimizer's average slots, and training goes on from them.

    Unlike Keras' callback, the raw weights are never overwritten: the resume state written after
    the last epoch keeps them, so `--resume --epochs N` extends a run exactly. Keras' fit then
    copies the slots (raw) into the model; on_train_end puts the average back."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)
        self._average = None

    def on_epoch_end(self, epoch, logs=None):
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True
        # Kept every epoch, not only at the last: a callback after this one (early stopping) may
        # still end the run at this epoch.
        self._average = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        if self._average is not None:
            for variable, value in zip(self.model.trainable_variables, self._average):
                variable.assign(value)

    def restored_from_checkpoint(self) -> None:
        # A resume state is written between epochs, so the model now holds the EMA weights:
        # the next on_epoch_begin must swap the raw ones back in.
        self._ema_weights_in_model = True


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops at the first NaN/Inf batch loss and remembers where (epoch and step, 1-based)."""

    def __init__(self):
        super().__init__()
        self.failed: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


def _current_lr(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class RunRecorder(keras.callbacks.Callback):
    """After every finished epoch: history.csv, and best.keras + best.json when `monitor`
    improved. Every `every` epochs and at the end: last.keras, the resume state (trainer weights
    with the optimizer, then state.json naming them: the commit point) and curves.png. A killed
    run thus always has a consistent last completed epoch. `saved`: the model the .keras files hold
    (the network with its per-image preprocessing inside, inference.portable; default: the
    trainer's network)."""

    def __init__(
        self,
        run,
        monitor: str,
        mode: str,
        state: dict | None,
        rows,
        recorded: dict,
        every: int = 1,
        saved=None,
    ):
        super().__init__()
        self.run = run
        self.saved = saved
        self.every = every
        self.monitor, self.mode = monitor, mode
        self.recorded = recorded  # the configuration the resume state vouches for
        state = state or {}
        self.best = state.get("best", -math.inf if mode == "max" else math.inf)
        self.best_epoch = state.get("best_epoch", 0)
        self.rows = list(rows or [])
        self.plateau = None
        self.stopped_early = False
        self._started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()
        fault_point("train.epoch_begin")  # tests hold a run here (skinseg.core.faults)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not all(math.isfinite(float(v)) for v in logs.values()):
            return  # NonFiniteGuard reports; the last good checkpoint stays
        row = {
            "epoch": epoch + 1,
            "lr": _current_lr(self.model.optimizer),
            **logs,
            "time_s": round(time.time() - self._started, 2),
        }
        self.rows.append(row)
        self.run.write_history(self.rows)
        value = logs.get(self.monitor)
        improved = value is not None and (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best, self.best_epoch = float(value), epoch + 1
            self.run.save_best(self.saved or self.model.network, epoch + 1, self.monitor, self.best)
        last_epoch = epoch + 1 == self.params.get("epochs")
        if self.model.stop_training and not last_epoch:
            self.stopped_early = True
        if (epoch + 1) % self.every == 0 or last_epoch or self.model.stop_training:
            last = self.run.save_network(self.saved or self.model.network, self.run.last_network)
            self.run.write_resume_state(
                self.model,
                {
                    "completed_epochs": epoch + 1,
                    "best": self.best,
                    "best_epoch": self.best_epoch,
                    "seed_states": [np.asarray(v).tolist() for v in self.model.seed_states()],
                    "plateau": _plateau_state(self.plateau),
                    "stopped_early": self.stopped_early,
                    "config": self.recorded,
                    "last_sha256": file_digest(last),
                },
            )
            plot_curves(self.rows, self.run.curves_path)  # ~0.1 s: not every fast epoch
            fault_point("train.epoch_committed")


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch (to the log, so to train.log as well); on a terminal, a progress bar
    for the epoch's steps before it. Keras' own progress output stays off."""

    def __init__(self, recorder: RunRecorder, steps: int, bar: bool):
        super().__init__()
        self.recorder, self.steps, self.bar = recorder, steps, bar
        self._progbar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.bar:
            print(f"epoch {epoch + 1}/{self.params.get('epochs', 0)}", file=sys.stderr)
            self._progbar = keras.utils.Progbar(self.steps, stateful_metrics=["loss", "dice"])

    def on_train_batch_end(self, batch, logs=None):
        if self._progbar is not None:
            self._progbar.update(
                batch + 1, [(k, v) for k, v in (logs or {}).items() if k in ("loss", "dice")]
            )

    def on_epoch_end(self, epoch, logs=None):
        self._progbar = None
        rows = self.recorder.rows
        if not rows or rows[-1]["epoch"] != epoch + 1:
            return
        row = rows[-1]
        shown = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        best = "  (best)" if self.recorder.best_epoch == epoch + 1 else ""
        log.info("epoch %d/%d  %s%s", epoch + 1, self.params.get("epochs", 0), shown, best)


def _plateau_state(callback) -> dict | None:
    if callback is None:
        return None
    return {
        "wait": int(callback.wait),
        "best": float(callback.best),
        "cooldown_counter": int(callback.cooldown_counter),
    }


def restore_plateau(callback, state: dict | None) -> None:
    if callback is not None and state:
        callback.wait, callback.best, callback.cooldown_counter = (
            state["wait"],
            state["best"],
            state["cooldown_counter"],
        )


def plot_curves(rows: list[dict], path: str) -> None:
    """Train/validation loss and validation Dice against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        ("loss", (("loss", "train loss"), ("val_loss", "validation loss"))),
        ("Dice", (("dice", "train Dice"), ("val_dice", "validation Dice"))),
    )
    for ax, (ylabel, curves) in zip(axes, panels):
        for key, label in curves:
            if any(key in r for r in rows):
                ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class ReplicaLocalValidation(keras.callbacks.Callback):
    """Validation without collectives, for runs with more than one replica (multi-worker, or
    mirrored over several devices).

    Keras' `evaluate` under a distribution strategy splits each validation batch among the
    replicas and all-reduces the first one to build the model (`_maybe_symbolic_build` in
    keras/src/backend/tensorflow/trainer.py), which fails as soon as the split does not divide
    evenly ("Shape mismatch in the collective": one replica has 2 images, another 1). After every
    training step all replicas hold the same weights, so each worker validates the whole split
    itself, whatever the split's size: the numbers `evaluate` gives in one process (the batch
    losses averaged weighted by batch size; each metric accumulated over the batches). The price:
    each worker reads the whole split (validation is a small share of an epoch). The workers'
    values are then averaged in one all-reduce of a fixed shape (one number per log): on a GPU
    non-deterministic kernels can make them differ in their last bits, and a plateau schedule or
    early stopping deciding differently on two workers would leave one waiting in a collective.

    It must run after EMAWeights (which swaps the averaged weights in at the end of each epoch)
    and before every callback that reads `val_*` logs (plateau, early stopping, the recorder)."""

    def __init__(self, dataset, metrics: list, strategy=None):
        super().__init__()
        self.dataset = dataset
        self.metrics = metrics
        self.strategy = strategy
        self._step = None

    def _agreed(self, values: list[float]) -> list[float]:
        """The mean of every replica's `values` (the same list of numbers on each)."""
        if self.strategy is None or self.strategy.num_replicas_in_sync == 1:
            return values
        local = tf.constant(values, tf.float32)
        with self.strategy.scope():
            per_replica = self.strategy.run(lambda: tf.identity(local))
            mean = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        return [float(v) for v in mean.numpy()]

    def _batch(self, packed):
        images, masks = packed[..., :3], packed[..., 3:]
        trainer = self.model
        predictions = trainer(images, training=False)
        loss = trainer.compute_loss(images, masks, predictions, training=False)
        # Keras scales a loss computed under a strategy by 1 / replicas (its test_step unscales it
        # the same way); undo it whichever strategy this runs under.
        loss = keras.ops.cast(loss, "float32") * float(tf.distribute.get_strategy().num_replicas_in_sync)
        for metric in self.metrics:
            metric.update_state(masks, predictions)
        return loss

    def on_epoch_end(self, epoch, logs=None):
        if self._step is None:
            self._step = tf.function(self._batch, reduce_retracing=True)
        for metric in self.metrics:
            metric.reset_state()
        total, count = 0.0, 0
        for packed in self.dataset:
            n = int(packed.shape[0])
            total += float(self._step(packed)) * n
            count += n
        if logs is not None and count:
            names = ["val_loss", *(f"val_{metric.name}" for metric in self.metrics)]
            values = [total / count, *(float(metric.result()) for metric in self.metrics)]
            logs.update(zip(names, self._agreed(values)))
