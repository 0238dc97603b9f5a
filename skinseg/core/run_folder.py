"""The run folder, the project's unit of record, and the one module that knows its files.

    config.json      the run's whole RunConfig
    split.json       the seeded train/validation split and the test split
    history.csv      one row per completed epoch
    best.json        the best epoch: its number, the monitored metric and its value
    best.keras       the network of that epoch (written before best.json names it)
    preprocessing.json what an image gets before the network (resize/pad, CLAHE, colour constancy):
                     the same file as beside the shipped model and an export
    postprocess.json threshold and mask clean-up chosen on the validation split for best.keras
    last.keras       the network after the last checkpointed epoch
    resume/          trainer weights + optimizer (epochNNNN.weights.h5) and state.json, the commit point
    curves.png       loss and Dice curves
    train.log        what training printed
    eval/            per_image.csv, summary.json, cases.png (written by evaluation)
    .lock            held by the one process that writes the folder (fcntl, or msvcrt on Windows;
                     released when it dies)

Every file is written to a temporary name (`.tmp-PID-NAME`) and renamed into place, so a killed
writer leaves whole files or temporaries, never half a file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil

from skinseg.core.atomic import atomic_path, write_json, write_text
from skinseg.core.errors import RunFolderError, RunLockedError
from skinseg.core.faults import checkpoint_delay
from skinseg.core.locking import try_lock

CONFIG = "config.json"
SPLIT = "split.json"
HISTORY = "history.csv"
BEST_RECORD = "best.json"
BEST = "best.keras"
# A network trained with CLAHE, which no portable file can hold (OpenCV): its files say by their
# name that they are the bare network and what a caller applies first (inference.portable).
BEST_NEEDS_CLAHE = "best.needs-clahe.keras"
LAST_NEEDS_CLAHE = "last.needs-clahe.keras"
POSTPROCESS = "postprocess.json"
PREPROCESSING = "preprocessing.json"
LAST = "last.keras"
RESUME = "resume"
STATE = "state.json"
CURVES = "curves.png"
LOG = "train.log"
EVAL = "eval"
PER_IMAGE = "per_image.csv"
SUMMARY = "summary.json"
CASES = "cases.png"
LOCK = ".lock"
CACHE = "cache"
TEMPORARY_PREFIX = ".tmp-"
# Everything a run writes in its folder (tensorboard/ with --tensorboard).
RUN_ENTRIES = {
    CONFIG,
    SPLIT,
    HISTORY,
    BEST_RECORD,
    BEST,
    BEST_NEEDS_CLAHE,
    LAST_NEEDS_CLAHE,
    POSTPROCESS,
    PREPROCESSING,
    LAST,
    RESUME,
    CURVES,
    LOG,
    EVAL,
    LOCK,
    CACHE,
    "tensorboard",
}


log = logging.getLogger("skinseg")


def file_digest(path: str) -> str:
    """SHA-256 of a file, to tell later whether a checkpoint is still the one that was written."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunFolder:
    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))
        self._lock_handle = None

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    config_path = property(lambda self: self.file(CONFIG))
    split_path = property(lambda self: self.file(SPLIT))
    history_path = property(lambda self: self.file(HISTORY))
    best_record_path = property(lambda self: self.file(BEST_RECORD))
    best_network = property(lambda self: self.file(BEST_NEEDS_CLAHE if self.needs_clahe() else BEST))
    last_network = property(lambda self: self.file(LAST_NEEDS_CLAHE if self.needs_clahe() else LAST))
    postprocess_path = property(lambda self: self.file(POSTPROCESS))
    preprocessing_path = property(lambda self: self.file(PREPROCESSING))
    resume_dir = property(lambda self: self.file(RESUME))
    state_path = property(lambda self: self.file(RESUME, STATE))
    curves_path = property(lambda self: self.file(CURVES))
    log_path = property(lambda self: self.file(LOG))
    eval_dir = property(lambda self: self.file(EVAL))
    per_image_path = property(lambda self: self.file(EVAL, PER_IMAGE))
    summary_path = property(lambda self: self.file(EVAL, SUMMARY))
    cases_path = property(lambda self: self.file(EVAL, CASES))
    cache_dir = property(lambda self: self.file(CACHE))

    # --- what the folder is -------------------------------------------------------------------

    def needs_clahe(self) -> bool:
        """Whether the run's images get CLAHE (its preprocessing.json, or config.json for a run
        of version 0.2): then its networks are saved as *.needs-clahe.keras."""
        for name in (PREPROCESSING, CONFIG):
            path = self.file(name)
            if os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8") as handle:
                        data = json.load(handle)
                except (OSError, ValueError):
                    return False  # the readers that own these files report the damage
                return isinstance(data, dict) and data.get("clahe") is True
        return False

    def has_config(self) -> bool:
        return os.path.isfile(self.config_path)

    def foreign_entries(self) -> list[str]:
        """What the folder holds that no run writes: never deleted, by anything here."""
        return sorted(
            name
            for name in (os.listdir(self.path) if os.path.isdir(self.path) else [])
            if name not in RUN_ENTRIES and not name.startswith(TEMPORARY_PREFIX)
        )

    def has_completed_epoch(self) -> bool:
        return os.path.isfile(self.state_path) or os.path.isfile(self.best_network)

    def is_empty(self) -> bool:
        return not [n for n in os.listdir(self.path) if n != LOCK] if os.path.isdir(self.path) else True

    # --- the one writer ---------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the folder's exclusive lock (creating the folder), or raise RunLockedError naming
        the process that holds it. The operating system releases it when the process dies."""
        if self._lock_handle is not None:
            return
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunFolderError(f"{self.path}: exists and is not a folder; choose another --out")
        self._made = not os.path.exists(self.path), not os.path.exists(self.file(LOCK))
        os.makedirs(self.path, exist_ok=True)
        handle = open(self.file(LOCK), "a+", encoding="utf-8")  # noqa: SIM115 (held for the run)
        try:
            taken = try_lock(handle)
        except OSError:
            handle.close()
            raise
        if not taken:
            try:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
            except OSError:  # Windows: the holder's locked byte cannot be read
                holder = "another process"
            handle.close()
            raise RunLockedError(
                f"{self.path} is in use by {holder}: one process writes a run folder at a time. "
                "Wait for it to finish (or stop it), or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing releases the flock
            self._lock_handle = None

    def release_untouched(self) -> None:
        """Unlock a folder this process refused to use, removing the lock file (and the folder)
        if taking the lock created them."""
        self.unlock()
        made_folder, made_lock = getattr(self, "_made", (False, False))
        if made_lock and os.path.exists(self.file(LOCK)):
            os.remove(self.file(LOCK))
        if made_folder and os.path.isdir(self.path) and not os.listdir(self.path):
            os.rmdir(self.path)

    @contextlib.contextmanager
    def locked(self):
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    def remove_stale_temporaries(self) -> None:
        """Temporaries a killed writer left behind; only the lock holder may call this."""
        assert self._lock_handle is not None, "remove_stale_temporaries needs the lock"
        for folder in (self.path, self.resume_dir, self.eval_dir):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(TEMPORARY_PREFIX):
                        os.remove(os.path.join(folder, name))

    def clear(self) -> None:
        """Delete the run's files, and only those (for --overwrite; lock holder only). A folder
        holding anything else is refused, untouched."""
        assert self._lock_handle is not None, "clear needs the lock"
        foreign = self.foreign_entries()
        if foreign:
            raise RunFolderError(
                f"{self.path} holds files a run does not write ({', '.join(foreign[:5])}); refusing to "
                "replace it, choose another --out"
            )
        for name in os.listdir(self.path):
            if name == LOCK:
                continue
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    # --- records whose types live upstairs ---------------------------------------------------------
    # config.json (training.config.RunConfig), split.json (data_pipeline.split) and
    # postprocess.json (inference.postprocess) are parsed by the modules that own their types; this
    # floor knows only where they are.

    def read_split_record(self) -> dict:
        """split.json as stored (IDs, paths and metadata), or {} when there is none."""
        return read_record(self.split_path) if os.path.exists(self.split_path) else {}

    # --- history and the best epoch -------------------------------------------------------------

    def read_history(self) -> list[dict]:
        if not os.path.exists(self.history_path):
            return []
        try:
            with open(self.history_path, newline="", encoding="utf-8") as handle:
                return [
                    {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(handle)
                ]
        except (ValueError, KeyError, csv.Error) as err:
            raise RunFolderError(f"{self.history_path}: not a history written by train.py ({err})") from None

    def write_history(self, rows: list[dict]) -> None:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.history_path, buffer.getvalue())

    def read_best(self) -> dict | None:
        """{"epoch", "monitor", "value"} of the network in best.keras, or None before the first."""
        if not os.path.exists(self.best_record_path):
            return None
        record = read_record(self.best_record_path)
        if not isinstance(record, dict):
            raise RunFolderError(f"{self.best_record_path}: not a best-epoch record written by train.py")
        check_keys(
            self.best_record_path,
            record,
            {"epoch": int, "monitor": str, "value": (int, float), "sha256": str},
            optional=("sha256",),  # records of version 0.1 have no checksum
        )
        return record

    def save_best(self, network, epoch: int, monitor: str, value: float) -> None:
        self.save_network(network, self.best_network)
        write_json(
            self.best_record_path,
            {"epoch": epoch, "monitor": monitor, "value": value, "sha256": file_digest(self.best_network)},
        )

    def save_network(self, network, path: str) -> str:
        with atomic_path(path) as tmp:
            network.save(tmp)
            checkpoint_delay()
        return path

    # --- resume state ---------------------------------------------------------------------------

    def read_resume_state(self) -> dict | None:
        if not os.path.exists(self.state_path):
            return None
        state = read_record(self.state_path)
        if not isinstance(state, dict):
            raise RunFolderError(f"{self.state_path}: not a resume state written by train.py")
        check_keys(
            self.state_path,
            state,
            {
                "completed_epochs": int,
                "weights": str,
                "weights_sha256": str,
                "best": (int, float),
                "best_epoch": int,
                "seed_states": list,
                "plateau": (dict, type(None)),
                "stopped_early": bool,
                "config": dict,
                "last_sha256": str,
            },
            # added by later versions: states written before them load with their defaults
            optional=("weights_sha256", "seed_states", "plateau", "stopped_early", "config", "last_sha256"),
        )
        if state["completed_epochs"] < 0 or os.path.basename(state["weights"]) != state["weights"]:
            raise RunFolderError(
                f"{self.state_path}: completed_epochs or weights is not a value train.py writes"
            )
        state["weights_path"] = self.file(RESUME, state["weights"])
        return state

    def write_resume_state(self, trainer, state: dict) -> None:
        """Trainer weights (with the optimizer), then state.json naming them with their digest:
        the commit point. Older weight files, now superseded, are removed."""
        os.makedirs(self.resume_dir, exist_ok=True)
        weights = f"epoch{state['completed_epochs']:04d}.weights.h5"
        path = self.file(RESUME, weights)
        with atomic_path(path) as tmp:
            trainer.save_weights(tmp)
            checkpoint_delay()
        write_json(self.state_path, {**state, "weights": weights, "weights_sha256": file_digest(path)})
        for name in os.listdir(self.resume_dir):
            if name.endswith(".weights.h5") and name != weights and not name.startswith(TEMPORARY_PREFIX):
                os.remove(self.file(RESUME, name))

    # --- evaluation -----------------------------------------------------------------------------

    def read_summary(self) -> dict | None:
        return read_record(self.summary_path) if os.path.exists(self.summary_path) else None

    def write_evaluation(self, per_image_csv: str, summary: dict) -> None:
        """per_image.csv, then summary.json naming it by its digest (`per_image_sha256`): the
        commit point. A kill between the two leaves a pair that does not match, which evaluation
        scores again instead of trusting."""
        write_text(self.per_image_path, per_image_csv)
        write_json(self.summary_path, {**summary, "per_image_sha256": file_digest(self.per_image_path)})

    def read_per_image(self) -> list[dict]:
        with open(self.per_image_path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def check_keys(path: str, record: dict, types: dict, optional=()) -> None:
    """A record's keys and types, as the version history allows: an unknown key, a missing key
    that is not `optional`, or a value of the wrong type is a RunFolderError naming the file and
    the key."""
    unknown = sorted(set(record) - set(types))
    if unknown:
        raise RunFolderError(
            f"{path}: unknown key(s) {', '.join(unknown)} (not written by this version of train.py)"
        )
    for key, kind in types.items():
        if key not in record:
            if key in optional:
                continue
            raise RunFolderError(f"{path}: {key} is missing")
        value = record[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise RunFolderError(f"{path}: {key} = {value!r} is not of the type train.py writes")


def read_record(path: str):
    """A JSON file of a run folder; unreadable or damaged is a RunFolderError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable ({err})") from None


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
