"""One training run, from a configuration to a complete run folder (see skinseg.core.run_folder).

Everything that can be checked is checked before the folder is touched: the data (discovered and
decoded), the options, and for --resume the folder's own records (configuration, history and
checkpoints against what the resume state vouches for). One process writes a run folder at a time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from skinseg.core.atomic import write_json
from skinseg.core.errors import RunFolderError, SkinsegError
from skinseg.core.run_folder import RunFolder, file_digest
from skinseg.data_pipeline.augment import POLICIES, build_augmenter, reference_augmenter
from skinseg.data_pipeline.split import assemble_splits, read_id_list, read_split, write_split
from skinseg.data_pipeline.synthetic import default_data
from skinseg.data_pipeline.tfdata import make_dataset, resolve_cache, steps_per_epoch
from skinseg.inference.portable import portable_model
from skinseg.inference.validation import choose_for_run
from skinseg.losses import get_loss
from skinseg.models.init import initialize
from skinseg.models.registry import build_model, resolve
from skinseg.training.callbacks import (
    EMAWeights,
    EpochPrinter,
    Flooding,
    NonFiniteGuard,
    ReplicaLocalValidation,
    RunRecorder,
    learning_rate,
    restore_plateau,
    schedule_callbacks,
)
from skinseg.training.config import (
    AUTO_FILTERS,
    REFERENCE_CLAHE_RANGE,
    ConfigError,
    RunConfig,
    default_run_name,
)
from skinseg.training.distribute import StrategyError, is_chief, make_strategy, split_cpu, worker_name
from skinseg.training.estimate import fit_capacity, warn_if_slow
from skinseg.training.init_from import load_initial_weights
from skinseg.training.init_from import record as init_record
from skinseg.training.trainer import DiceScore, SegmentationTrainer

log = logging.getLogger("skinseg")


class TrainingDiverged(SkinsegError, RuntimeError):
    exit_code = 3  # not the input's fault: the run's numbers

    def __init__(self, epoch: int, step: int, run: RunFolder, last_good: int):
        self.epoch, self.step = epoch, step
        kept = (
            f"the last good checkpoint ({run.last_network}, epoch {last_good}) is kept"
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


def data_sources(config: RunConfig) -> list[tuple[str, str | None]]:
    """(data set folder or images folder, masks folder or None) of each --data; the synthetic
    set by default."""
    if not config.data:
        return [(default_data(), None)]
    return [(source[0], source[1] if len(source) > 1 else None) for source in config.data]


def _environment() -> dict:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "argv": sys.argv,
    }


def is_run(run: RunFolder) -> bool:
    """A folder train.py made: its config.json is a run configuration (not just any file of
    that name)."""
    if not run.has_config():
        return False
    try:
        RunConfig.load(run.config_path)
    except ConfigError:  # not ours, or damaged (which --resume reports)
        return False
    return True


def write_records(run: RunFolder, config: RunConfig) -> None:
    """config.json, and preprocessing.json: what every image gets before the network, in the
    format the shipped model and the exports use (read back by inference.segmenter)."""
    config.save(run.config_path)
    write_json(run.preprocessing_path, config.preprocessing.to_json())


def check_tensorboard(config: RunConfig) -> None:
    """Keras' TensorBoard callback needs the tensorboard package, which the requirements do not
    install (a web server most runs do not use): refused before anything is written."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "--tensorboard writes logs with the tensorboard package, which is not installed (the "
            "requirements leave it out): pip install tensorboard, or train without --tensorboard "
            "(history.csv and curves.png hold the same curves)"
        )


def settle_capacity(config: RunConfig) -> RunConfig:
    """`--max-filters auto` made concrete before anything is written: the reference's widths when
    the run's estimated memory fits, else the widest cap that does, said loudly; recorded in
    config.json (`capacity`) and marked in the results table."""
    preset = resolve(config.model)
    if preset.family != "unet":
        return config.replace(max_filters=None if config.max_filters == AUTO_FILTERS else config.max_filters)
    record = fit_capacity(
        config.width or preset.width,
        config.depth or preset.depth,
        config.max_filters,
        config.image_size,
        # each replica holds its share of the batch (and the whole network)
        -(-config.batch_size // max(1, len(tf.config.list_physical_devices("GPU")))),
        config.optimizer,
        bool(config.ema),
    )
    if record["capped"]:
        log.warning(
            "%s: the reference's widths (%s parameters) need an estimated %.1f GiB to train at batch %d, "
            "over the %.1f GiB budget of this machine's %s; channels capped at %d: %s parameters "
            "(estimated %.1f GiB). --max-filters none insists on the reference's widths, N chooses a cap",
            config.model,
            f"{record['reference_parameters']:,}",
            record["reference_gib"],
            config.batch_size,
            record["budget_gib"],
            record["memory"],
            record["max_filters"],
            f"{record['parameters']:,}",
            record["estimated_gib"],
        )
    return config.replace(max_filters=record["max_filters"], capacity=record)


def check_global_batch(batch_size: int, n_train: int, replicas: int) -> None:
    """With several replicas every step's global batch must be whole and divide among them: the
    final partial batch of an epoch is dropped (the pipeline batches with drop_remainder, on
    every worker alike), so fewer training images than one batch would leave no step at all."""
    if batch_size % replicas:
        raise RunFolderError(
            f"--batch-size {batch_size} is the global batch; it must divide evenly among the "
            f"{replicas} replicas"
        )
    if replicas > 1 and n_train < batch_size:
        raise RunFolderError(
            f"{n_train} training image(s) do not fill one global batch of {batch_size} across "
            f"{replicas} replicas; lower --batch-size (a multiple of {replicas}) or add images"
        )


def start_run(config: RunConfig, *, overwrite: bool = False, replicas: int = 1):
    """The data checked and split, then the run folder locked, made ready and recorded.
    Returns (config as recorded, run folder (locked), splits). `replicas`: the strategy's, whose
    global batch the training split must fill (checked before the folder is made)."""
    check_tensorboard(config)
    if config.folds and config.fold is None:
        raise ConfigError(
            f"folds={config.folds} trains {config.folds} runs: give fold=I for one of them (train.py --folds K "
            "trains them all)"
        )
    exclude = frozenset(read_id_list(config.exclude)) if config.exclude else frozenset()
    splits = assemble_splits(
        data_sources(config),
        image_size=config.image_size,
        val_fraction=config.val_fraction,
        val_from=config.val_from,
        seed=config.seed,
        skip_bad=config.skip_bad,
        allow_overlap=config.allow_overlap,
        folds=config.folds,
        fold=config.fold,
        allow_empty_masks=config.allow_empty_masks,
        exclude=exclude,
    )
    check_global_batch(config.batch_size, len(splits.train), replicas)
    config = settle_capacity(config)
    if config.init_from:
        config = config.replace(init_source=init_record(config.init_from))
        # the weights must fit before a folder is made (the network is built again under the strategy)
        load_initial_weights(build_network(config), config.init_source)
    run = RunFolder(config.out or os.path.join("runs", default_run_name(config)))
    run.lock()
    try:
        run.remove_stale_temporaries()  # a killed run may have left only these
        if not run.is_empty():
            if not is_run(run) or run.foreign_entries():  # never delete what train.py did not make
                raise RunFolderError(
                    f"{run.path} is not empty and is not a run folder of train.py; refusing to use it, "
                    "choose another --out"
                )
            if run.has_completed_epoch() and not overwrite:
                raise RunFolderError(
                    f"{run.path} already exists; pass --resume --out {run.path} to continue it, "
                    "--overwrite to replace it, or --out to choose another folder"
                )
            if not run.has_completed_epoch():
                log.info("%s: replacing a run that never completed an epoch", run.path)
            run.clear()
        config = config.replace(out=run.path, created_with=_environment())
        write_records(run, config)
        held_out = (
            {"exclude_file": os.path.abspath(config.exclude), "excluded_ids": sorted(exclude)}
            if exclude
            else {}
        )
        write_split(
            run.split_path, splits.as_dict(), **splits.meta(config.seed, config.val_fraction), **held_out
        )
        if splits.cv:
            log.info(
                "fold %d of %d (stratified by lesion size): %d train, %d validation, %d out-of-fold test",
                config.fold,
                config.folds,
                len(splits.train),
                len(splits.validation),
                len(splits.test),
            )
    except RunFolderError:
        run.release_untouched()
        raise
    except BaseException:
        run.unlock()
        raise
    return config, run, splits


def resume_run(out: str, *, given: dict | None = None):
    """The run in `out`, locked and verified. `given`: the options typed with --resume; they are
    reported as ignored where they differ from the run's, except --epochs, which extends it.
    Returns (config, run folder (locked), splits, resume state or None)."""
    run = RunFolder(out)
    if not run.has_config():
        if os.path.isdir(run.path):
            # A run that is starting holds the folder before its config.json is written: that
            # process is named (RunLockedError), not "nothing to resume".
            run.lock()
            run.release_untouched()
        raise RunFolderError(f"{run.path}: nothing to resume (no config.json); start it without --resume")
    run.lock()
    try:
        run.remove_stale_temporaries()
        config = RunConfig.load(run.config_path)
        check_tensorboard(config)
        state = run.read_resume_state()
        verify_resume(run, config, state)
        completed = state["completed_epochs"] if state else 0
        given = dict(given or {})
        epochs = given.pop("epochs", None)
        if given.get("data"):
            given["data"] = tuple(tuple(os.path.abspath(p) for p in source) for source in given["data"])
        for key, value in sorted(given.items()):
            if key != "out" and getattr(config, key) != value:
                log.warning(
                    "ignoring --%s %s: a resumed run keeps its configuration (%s = %s)",
                    key.replace("_", "-"),
                    value,
                    key,
                    getattr(config, key),
                )
        splits = read_split(run.split_path)  # before anything is written: the data must still be there
        if epochs is not None and epochs != config.epochs:
            if epochs < completed:
                raise RunFolderError(
                    f"{run.path}: --epochs {epochs}, but {completed} epochs are already done"
                )
            change = "extending" if epochs > config.epochs else "shortening"
            log.info("%s: %s the run from %d to %d epochs", run.path, change, config.epochs, epochs)
            if config.lr_schedule == "cosine":
                log.info("(the cosine schedule now spans %d epochs from the step it had reached)", epochs)
            config = config.replace(epochs=epochs)
            write_records(run, config)
    except BaseException:
        run.unlock()
        raise
    return config, run, splits, state


def verify_resume(run: RunFolder, config: RunConfig, state: dict | None) -> None:
    """The folder's records must agree with what the resume state vouches for; any difference is
    an error naming the file, so a tampered or damaged run never resumes silently."""
    if state is None:
        # The state commits every `checkpoint_every` epochs; the history is written every epoch,
        # so up to that many rows may precede the first commit (a run killed then starts over).
        done = len(run.read_history())
        if done > config.checkpoint_every:
            raise RunFolderError(
                f"{run.state_path}: missing, but {run.history_path} shows {done} completed epoch(s); "
                "the run cannot resume without its state (restore resume/, or start a new run)"
            )
        if done:
            log.warning(
                "%s: its first checkpoint was never committed (no %s): training starts again from "
                "epoch 1, replacing history.csv",
                run.path,
                run.state_path,
            )
        return
    if state["completed_epochs"] > config.epochs:
        raise RunFolderError(
            f"{run.config_path}: says {config.epochs} epochs, but {state['completed_epochs']} are done; "
            "restore it (--resume --epochs N is the way to change a run's length)"
        )
    recorded = state.get("config")
    if recorded is not None:
        # A state written by an older version lacks the options added since: they had their
        # default values then.
        recorded = {**RunConfig().recorded(), **recorded}
        differ = [
            k
            for k in sorted(set(recorded) | set(config.recorded()))
            if recorded.get(k) != config.recorded().get(k)
        ]
        if differ:
            changes = ", ".join(
                f"{k} is {config.recorded().get(k)!r}, was {recorded.get(k)!r}" for k in differ
            )
            raise RunFolderError(
                f"{run.config_path}: changed since the run was trained ({changes}); restore it, or "
                "start a new run (--resume --epochs N is the way to extend a run)"
            )
    completed = state["completed_epochs"]
    epochs = [row.get("epoch") for row in run.read_history()]
    if epochs[:completed] != list(range(1, completed + 1)):
        raise RunFolderError(
            f"{run.history_path}: holds epochs {epochs[:completed] or 'none'}, but the resume state "
            f"({run.state_path}) says {completed} epochs were completed; the history is damaged"
        )
    for path, key in ((state["weights_path"], "weights_sha256"), (run.last_network, "last_sha256")):
        if key not in state:
            continue
        if not os.path.exists(path):
            raise RunFolderError(f"{path}: missing; the run cannot resume without it")
        if file_digest(path) != state[key]:
            raise RunFolderError(
                f"{path}: differs from the file written at epoch {completed} (its checksum does not "
                "match; truncated or replaced?); the run cannot resume from it"
            )


def run_training(
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    given: dict | None = None,
    network=None,
    verbose="auto",
) -> RunResult:
    """Train (or resume) one run. `network` replaces the registry's model (tests).

    The distribution strategy comes first, before any other TensorFlow work (a multi-worker
    strategy must). Under it only the chief writes the run folder; every other worker writes
    its checkpoints to a temporary folder that is removed at the end (Keras' multi-worker
    convention), and reads the chief's folder to resume (a file system all workers share)."""
    planned = (
        RunConfig.load(RunFolder(config.out).config_path)
        if resume and RunFolder(config.out).has_config()
        else config
    )
    split_cpu(planned.logical_cpus)
    strategy = make_strategy(planned.strategy)
    if not is_chief(strategy):
        return _train_as_worker(config, strategy, resume, given, network, worker_name(strategy))
    if resume:
        config, run, splits, state = resume_run(config.out, given=given)
        found = None
    else:
        (config, run, found), state = (
            start_run(config, overwrite=overwrite, replicas=strategy.num_replicas_in_sync),
            None,
        )
        splits = found.as_dict()
    handler = logging.FileHandler(run.log_path, encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("run folder: %s", run.path)
        for source in found.sources if found is not None else ():
            log.info("data %s", source.describe(config.val_fraction))
        return _train(config, run, splits, state, strategy, network, verbose)
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: python train.py --out %s --resume", run.path)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
        run.unlock()


def _train_as_worker(config, strategy, resume, given, network, name) -> RunResult:
    """A worker other than the chief: the same data, configuration and steps, checkpoints to a
    temporary folder (removed at the end); resumes from the chief's folder."""
    folder = tempfile.mkdtemp(prefix="skinseg-worker-")
    scratch = RunFolder(folder)
    try:
        if resume:
            chief = RunFolder(config.out)
            config = RunConfig.load(chief.config_path)
            state = chief.read_resume_state()
            verify_resume(chief, config, state)
            epochs = (given or {}).get("epochs")
            if epochs:
                config = config.replace(epochs=epochs)
            splits = read_split(chief.split_path)
            scratch.lock()
            if state:
                scratch.write_history(chief.read_history()[: state["completed_epochs"]])
        else:
            config, scratch, found = start_run(
                config.replace(out=folder), overwrite=True, replicas=strategy.num_replicas_in_sync
            )
            splits, state = found.as_dict(), None
        log.info(
            "%s: checkpoints go to %s (removed at the end); the chief writes the run folder",
            name,
            scratch.path,
        )
        return _train(config, scratch, splits, state, strategy, network, verbose=2)
    finally:
        scratch.unlock()
        shutil.rmtree(folder, ignore_errors=True)


def _train(config: RunConfig, run: RunFolder, splits, state, strategy, network, verbose) -> RunResult:
    completed = state["completed_epochs"] if state else 0
    if completed >= config.epochs:
        best = run.read_best() or {}
        log.info(
            "%s: all %d epochs are already done (best epoch %s); --resume --epochs N extends the run",
            run.path,
            config.epochs,
            best.get("epoch"),
        )
        return RunResult(run.path, completed, state["best_epoch"], state["best"], run.read_history())
    if state:
        log.info("resuming %s after epoch %d", run.path, completed)

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    train_pairs, val_pairs = splits["train"], splits["validation"]
    steps = steps_per_epoch(len(train_pairs), config.batch_size)
    replicas = strategy.num_replicas_in_sync
    check_global_batch(config.batch_size, len(train_pairs), replicas)  # a resumed run's, too
    given_network = network is not None
    with strategy.scope():
        network = network or build_network(config)
        if not completed and not given_network:  # a resumed run loads its weights; a given one keeps its own
            initialize(network, config.init, resolve(config.model).family, config.seed)
            if config.init_from:
                load_initial_weights(network, config.init_source)
                log.info(
                    "weights from %s (%s, sha256 %s...)",
                    config.init_from,
                    config.init_source["path"],
                    config.init_source["sha256"][:12],
                )
        augmenter = None
        if config.aug and config.aug_policy == "reference":
            augmenter = reference_augmenter(config.seed)
        elif config.aug:
            augmenter = build_augmenter(config.seed, elastic=config.elastic, **POLICIES[config.aug_policy])
        trainer = SegmentationTrainer(network, augmenter)
        trainer.compile(
            optimizer=make_optimizer(config, steps),
            loss=get_loss(config.loss),
            metrics=[DiceScore()],
        )
        trainer.build_for_fit((config.image_size, config.image_size, 3))
        trainer.trace = _example_trace()
    log.info(
        "model %s: %s parameters; %d replica(s); %d steps per epoch",
        network.name,
        f"{network.count_params():,}",
        strategy.num_replicas_in_sync,
        steps,
    )
    warn_if_slow(network, len(train_pairs) + len(val_pairs), config.epochs - completed)

    cache = resolve_cache(config.cache, len(train_pairs) + len(val_pairs), config.image_size)
    common = {
        "size": config.image_size,
        "batch_size": config.batch_size,
        "cache": cache,
        "cache_dir": run.cache_dir,
        "preprocessing": config.preprocessing,
    }
    reference_policy = config.aug and config.aug_policy == "reference"
    train_ds = make_dataset(
        train_pairs,
        training=True,
        seed=config.seed,
        pack=True,
        **common,
        clahe_clip_range=REFERENCE_CLAHE_RANGE if reference_policy else None,
    )
    train_ds = train_ds.skip(completed * steps)  # a resumed run sees the batches it would have seen
    val_ds = make_dataset(val_pairs, training=False, pack=True, **common) if val_pairs else None

    monitor = config.monitor
    if val_ds is None and monitor.startswith("val_"):
        monitor = monitor.removeprefix("val_")
        log.warning("no validation split: best.keras is chosen on the training %s", monitor)
    mode = "min" if monitor.endswith("loss") else "max"
    recorder = RunRecorder(
        run,
        monitor,
        mode,
        state,
        run.read_history()[:completed],
        config.recorded(),
        every=config.checkpoint_every,
        saved=portable_model(network, config.preprocessing),
    )
    guard = NonFiniteGuard()
    callbacks = [guard]
    ema = EMAWeights() if config.ema else None
    if ema:
        callbacks.append(ema)  # before validation and the recorder: they see the averaged weights
    local_validation = replicas > 1 and val_ds is not None
    if local_validation:  # see ReplicaLocalValidation: Keras' evaluate fails on uneven splits
        callbacks.append(ReplicaLocalValidation(val_ds, [DiceScore()], strategy))
    callbacks += schedule_callbacks(config)
    recorder.plateau = next((c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
    if config.flooding:
        callbacks.append(Flooding(config.flooding, config.flooding_start))
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.early_stopping)
        )
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(run.file("tensorboard")))
    callbacks.append(recorder)  # after the others: sees the learning rate and the logs they set
    bar = sys.stderr.isatty() if verbose == "auto" else verbose == 1
    callbacks.append(EpochPrinter(recorder, steps, bar))  # its lines also go to train.log

    if state:
        with strategy.scope():
            _restore(trainer, state, recorder)
        if ema:
            ema.restored_from_checkpoint()
    try:
        trainer.fit(
            train_ds,
            epochs=config.epochs,
            initial_epoch=completed,
            steps_per_epoch=steps,
            validation_data=None if local_validation else val_ds,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles (seeded)
            verbose=0,  # EpochPrinter prints
        )
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as err:
        if not worker_name(strategy):
            raise
        first = str(err).strip().splitlines()[0][:300]
        raise StrategyError(
            f"another worker stopped answering ({first}); the run keeps its last completed epoch: "
            f"restart every worker with --out {run.path if is_chief_run(run) else 'RUN'} --resume"
        ) from None
    finally:
        shutil.rmtree(run.cache_dir, ignore_errors=True)
    if guard.failed:
        epoch, step = guard.failed
        raise TrainingDiverged(epoch, step, run, len(recorder.rows))
    log.info(
        "done: %d epochs; best %s %.4f at epoch %d",
        len(recorder.rows),
        monitor,
        recorder.best,
        recorder.best_epoch,
    )
    if worker_name(strategy):  # every worker must end with the same weights
        log.info("%s: weights digest %s", worker_name(strategy), weights_digest(network))
    elif val_pairs and os.path.exists(run.best_network):
        # Outside the workers' collectives: evaluation chooses it for multi-worker runs.
        try:
            choose_for_run(run, batch_size=config.batch_size, fixed=config.mask_step == "fixed")
        except (SkinsegError, OSError) as err:  # the run itself is complete
            log.warning("post-processing not chosen (%s); evaluate.py chooses it", err)
    return RunResult(run.path, len(recorder.rows), recorder.best_epoch, recorder.best, recorder.rows)


def build_network(config: RunConfig):
    return build_model(
        config.model,
        config.image_size,
        width=config.width,
        depth=config.depth,
        max_filters=config.max_filters,
        padding=config.padding,
        backbone=config.backbone,
        backbone_weights=config.backbone_weights,
    )


def is_chief_run(run: RunFolder) -> bool:
    return not os.path.basename(run.path).startswith("skinseg-worker-")


def _example_trace():
    """Tests set SKINSEG_TRACE_EXAMPLES=DIR to record which examples each process trains on,
    step by step (DIR/PID.txt: step, then each example's pixel sum)."""
    folder = os.environ.get("SKINSEG_TRACE_EXAMPLES")
    if not folder:
        return None
    path = os.path.join(folder, f"{os.getpid()}.txt")

    def trace(step, sums):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(" ".join([str(int(step)), *(f"{float(v):.3f}" for v in sums.numpy())]) + "\n")

    return trace


def weights_digest(network) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for weight in network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def make_optimizer(config: RunConfig, steps: int):
    lr = learning_rate(config, steps)
    ema = {"use_ema": True, "ema_momentum": config.ema} if config.ema else {}
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr, epsilon=config.epsilon, **ema)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay, epsilon=config.epsilon, **ema)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **ema)


def _restore(trainer, state: dict, recorder) -> None:
    """Weights, optimizer slots and step count, augmentation RNG, and schedule state."""
    if not trainer.optimizer.built:
        trainer.optimizer.build(trainer.trainable_variables)
    try:
        trainer.load_weights(state["weights_path"])
    except (ValueError, KeyError) as err:  # h5 layouts that do not match the network built now
        raise RunFolderError(
            f"{state['weights_path']}: its weights do not fit the network this version builds from "
            f"config.json (its layers changed since the run was trained, e.g. DeepLabV3+ in version "
            f"0.3: no dropout, align-corners resizes); start the run again ({str(err).splitlines()[0][:200]})"
        ) from None
    for variable, value in zip(trainer.seed_states(), state.get("seed_states", [])):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    restore_plateau(recorder.plateau, state.get("plateau"))
