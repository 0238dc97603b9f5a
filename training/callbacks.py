"""Callbacks: flooding level, LR schedule, non-finite guard, and the run recorder (history.csv,
best/last checkpoints, resume state, curves.png), every file written atomically."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time

import keras
import numpy as np

from data_pipeline.atomic import atomic_path, read_json, write_json, write_text

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
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


class RunRecorder(keras.callbacks.Callback):
    """After every finished epoch: history.csv and best.keras (when `monitor` improved). Every
    `every` epochs and at the end: last.keras, the resume state (trainer weights + optimizer, and
    state.json naming them, written last: the commit point), and curves.png. A killed run thus
    always has a consistent last completed epoch."""

    def __init__(
        self, run_dir: str, monitor: str, mode: str, state: dict | None = None, rows=None, every: int = 1
    ):
        super().__init__()
        self.run_dir = run_dir
        self.every = every  # last.keras and the resume state every `every` epochs (and at the end)
        self.monitor, self.mode = monitor, mode
        state = state or {}
        self.best = state.get("best", -math.inf if mode == "max" else math.inf)
        self.best_epoch = state.get("best_epoch", 0)
        self.rows = list(rows or [])
        self.plateau = None
        self._started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

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
        write_text(os.path.join(self.run_dir, "history.csv"), history_csv(self.rows))
        value = logs.get(self.monitor)
        improved = value is not None and (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best, self.best_epoch = float(value), epoch + 1
            save_network(self.model.network, os.path.join(self.run_dir, "best.keras"))
        last_epoch = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every == 0 or last_epoch or self.model.stop_training:
            save_network(self.model.network, os.path.join(self.run_dir, "last.keras"))
            self._save_resume_state(epoch + 1)
            plot_curves(self.rows, os.path.join(self.run_dir, "curves.png"))  # ~0.1 s: not every fast epoch
        shown = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch",))
        log.info(
            "epoch %d/%d  %s%s",
            epoch + 1,
            self.params.get("epochs", 0),
            shown,
            "  (best)" if improved else "",
        )

    def _save_resume_state(self, completed: int) -> None:
        resume_dir = os.path.join(self.run_dir, "resume")
        os.makedirs(resume_dir, exist_ok=True)
        weights = f"epoch{completed:04d}.weights.h5"
        with atomic_path(os.path.join(resume_dir, weights)) as tmp:
            self.model.save_weights(tmp)
            _fault_injection_pause()
        state = {
            "completed_epochs": completed,
            "weights": weights,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "seed_states": [np.asarray(v).tolist() for v in self.model.seed_states()],
            "plateau": _plateau_state(self.plateau),
        }
        write_json(os.path.join(resume_dir, "state.json"), state)
        for name in os.listdir(resume_dir):  # older states, now superseded
            if name.endswith(".weights.h5") and name != weights and not name.startswith(".tmp-"):
                os.remove(os.path.join(resume_dir, name))


def _fault_injection_pause() -> None:
    """Tests set SKINSEG_CHECKPOINT_DELAY to kill a run while a checkpoint is being written."""
    delay = float(os.environ.get("SKINSEG_CHECKPOINT_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)


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


def save_network(network: keras.Model, path: str) -> None:
    with atomic_path(path) as tmp:
        network.save(tmp)
        _fault_injection_pause()


def read_resume_state(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "resume", "state.json")
    if not os.path.exists(path):
        return None
    state = read_json(path)
    state["weights_path"] = os.path.join(run_dir, "resume", state["weights"])
    return state


def history_csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_history(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append({k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""})
        return rows


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
