"""Evaluate trained runs on their test split (the only place the test set is touched).

python evaluate.py --run runs/baseline            # one run: eval/per_image.csv, eval/summary.json
python evaluate.py --all                          # every run under runs/ -> runs/results.md
python evaluate.py --run runs/x --at original --tta
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

log = logging.getLogger("skinseg")

SUMMARY_VERSION = 1


class EvaluationError(RuntimeError):
    pass


def _settings(at, tta, threshold, empty, data=None, **_) -> dict:
    """What a summary was computed with; results with other settings are not up to date."""
    return {
        "at": at,
        "tta": tta,
        "threshold": threshold,
        "empty": empty,
        "data": data,
        "version": SUMMARY_VERSION,
    }


def load_test_pairs(run_dir: str, config, data: list[str] | None, skip_bad: bool):
    """The run's stored test split, or the test (or only) split of `data`."""
    from data_pipeline.discovery import discover_pairs
    from data_pipeline.split import read_split
    from training.run import usable_pairs

    if data:
        found = discover_pairs(data[0], data[1] if len(data) > 1 else None)
        name = "test" if "test" in found.splits else "all" if "all" in found.splits else None
        if name is None:
            raise EvaluationError(f"{data[0]}: no test split (splits: {', '.join(found.splits)})")
        pairs, _ = usable_pairs(
            found.splits[name], found.errors_of(name), config.replace(skip_bad=skip_bad), "test"
        )
        return pairs
    split_path = os.path.join(run_dir, "split.json")
    if not os.path.exists(split_path):
        raise EvaluationError(f"{split_path}: missing; is {run_dir} a run folder of train.py?")
    pairs = read_split(split_path)["test"]
    if not pairs:
        raise EvaluationError(f"{run_dir}: its data set had no test split; pass --data PATH")
    return pairs


def _read_history_losses(run_dir: str, best_epoch: int | None) -> tuple[float | None, float | None]:
    from training.callbacks import read_history

    rows = read_history(os.path.join(run_dir, "history.csv"))
    if not rows:
        return None, None
    at_best = next((r.get("loss") for r in rows if r["epoch"] == best_epoch), None)
    return rows[-1].get("loss"), at_best


def evaluate_run(
    run_dir: str,
    *,
    at="input",
    tta=False,
    threshold=0.5,
    empty="diagonal",
    data=None,
    batch_size=16,
    skip_bad=False,
    figures=True,
) -> dict:
    """Per-image CSV and summary JSON in RUN/eval/; returns the summary."""
    import cv2
    import keras

    from data_pipeline.atomic import read_json, write_json, write_text
    from data_pipeline.image_io import read_image, read_mask
    from data_pipeline.tfdata import make_dataset, prepare_image
    from losses import get_loss
    from metrics import ShapeMismatchError, image_metrics, summarize
    from metrics.figures import case_grid, overlay
    from models.inference import input_size, load_segmenter, predict_probabilities
    from training.config import RunConfig

    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise EvaluationError(f"{config_path}: missing; is {run_dir} a run folder of train.py?")
    config = RunConfig.load(config_path)
    model_path = os.path.join(run_dir, "best.keras")
    model = load_segmenter(model_path)
    size = input_size(model)
    pairs = load_test_pairs(run_dir, config, data, skip_bad)
    loss_fn = get_loss(config.loss)

    dataset = make_dataset(pairs, size, batch_size, training=False, cache="none", clahe=config.clahe)
    rows, loss_sum, infer_time, timed_images = [], 0.0, 0.0, 0
    index = 0
    for batch, (images, masks) in enumerate(dataset):
        images = images.numpy()
        start = time.perf_counter()
        probs = predict_probabilities(model, images, tta)
        if batch > 0:  # the first batch includes tracing
            infer_time += time.perf_counter() - start
            timed_images += len(images)
        loss_sum += float(loss_fn(masks, probs[..., None])) * len(images)
        for k in range(len(images)):
            pair = pairs[index]
            index += 1
            if at == "original":
                truth = read_mask(pair.mask).array
                prob = cv2.resize(probs[k], (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            else:
                truth = masks[k, :, :, 0].numpy() > 0.5
                prob = probs[k]
            pred = prob > threshold
            try:
                metrics = image_metrics(pred, truth, empty=empty)
            except ShapeMismatchError as err:
                raise EvaluationError(f"{pair.mask}: {err}") from None
            rows.append(
                {
                    "id": pair.id,
                    "image": pair.image,
                    **metrics,
                    "pred_pixels": int(pred.sum()),
                    "truth_pixels": int(truth.sum()),
                }
            )

    state_path = os.path.join(run_dir, "resume", "state.json")
    best_epoch = read_json(state_path).get("best_epoch") if os.path.exists(state_path) else None
    final_loss, best_loss = _read_history_losses(run_dir, best_epoch)
    summary = summarize(rows)
    summary.update(
        run=os.path.basename(os.path.normpath(run_dir)),
        model=config.model,
        model_path=model_path,
        params=int(model.count_params()),
        test_loss=loss_sum / len(rows),
        train_loss=best_loss,
        train_loss_final=final_loss,
        best_epoch=best_epoch,
        input_size=list(size),
        ms_per_image=1000 * infer_time / timed_images if timed_images else None,
        settings=_settings(at, tta, threshold, empty, data),
    )
    out = os.path.join(run_dir, "eval")
    write_text(os.path.join(out, "per_image.csv"), _csv(rows))
    write_json(os.path.join(out, "summary.json"), summary)
    if figures:
        ranked = sorted(rows, key=lambda r: r["dice"], reverse=True)
        picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
        cases = []
        for label, row in picks:
            pair = next(p for p in pairs if p.id == row["id"])
            image = read_image(pair.image).array
            truth = read_mask(pair.mask).array
            model_input = prepare_image(image, size, config.clahe).astype(np.float32)[None] / 255.0
            prob = predict_probabilities(model, model_input, tta)[0]
            prob = cv2.resize(prob, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            cases.append((f"{label}: {row['id']}", row["dice"], overlay(image, truth, prob > threshold)))
        case_grid(cases, os.path.join(out, "cases.png"), summary["run"])
    keras.backend.clear_session()
    return summary


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_per_image(run_dir: str) -> dict[str, float]:
    with open(os.path.join(run_dir, "eval", "per_image.csv"), newline="") as handle:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}


def is_up_to_date(run_dir: str, settings: dict) -> bool:
    """Results newer than the model, computed with the same settings."""
    summary_path = os.path.join(run_dir, "eval", "summary.json")
    model_path = os.path.join(run_dir, "best.keras")
    if not (os.path.exists(summary_path) and os.path.exists(model_path)):
        return False
    if os.path.getmtime(summary_path) < os.path.getmtime(model_path):
        return False
    with open(summary_path) as handle:
        return json.load(handle).get("settings") == settings


def find_runs(runs_dir: str) -> list[str]:
    if not os.path.isdir(runs_dir):
        raise EvaluationError(f"{runs_dir}: no such folder (train a model first, or pass --runs-dir)")
    return sorted(
        os.path.join(runs_dir, name)
        for name in os.listdir(runs_dir)
        if os.path.exists(os.path.join(runs_dir, name, "config.json"))
    )


def pick_baseline(run_dirs: list[str]) -> str | None:
    """The plain baseline: model baseline with no augmentation, flooding or LR schedule."""
    from training.config import RunConfig

    plain = []
    for run in run_dirs:
        c = RunConfig.load(os.path.join(run, "config.json"))
        if c.model == "baseline" and not (c.aug or c.flooding or c.lr_schedule != "none"):
            plain.append(os.path.basename(run))
    return plain[0] if plain else None


def evaluate_all(runs_dir: str, baseline: str | None, force: bool, **options) -> str:
    from data_pipeline.atomic import write_text
    from metrics.figures import dice_boxplot
    from metrics.table import render_results

    run_dirs = find_runs(runs_dir)
    if not run_dirs:
        raise EvaluationError(f"{runs_dir}: no run folders (folders with a config.json) to evaluate")
    settings = _settings(**options)
    results = []
    for run in run_dirs:
        if not os.path.exists(os.path.join(run, "best.keras")):
            log.warning("%s: no best.keras yet (training did not finish an epoch); left out", run)
            continue
        if not force and is_up_to_date(run, settings):
            log.info("%s: results are up to date", run)
            with open(os.path.join(run, "eval", "summary.json")) as handle:
                summary = json.load(handle)
        else:
            log.info("evaluating %s", run)
            summary = evaluate_run(run, **options)
        results.append({"name": os.path.basename(run), "summary": summary, "dice_by_id": read_per_image(run)})
    baseline = baseline or pick_baseline([os.path.join(runs_dir, r["name"]) for r in results])
    path = os.path.join(runs_dir, "results.md")
    note = (
        f"Test-set results ({options['at']} resolution, threshold {options['threshold']}"
        f"{', flip TTA' if options['tta'] else ''}); each model is its run's best.keras, selected on "
        "the validation split. ASD is MedPy's (directed, prediction to truth), in pixels. "
        "p: two-sided Wilcoxon signed-rank test of per-image Dice against the baseline run.\n\n"
    )
    write_text(path, "# Results\n\n" + note + render_results(results, baseline))
    dice_boxplot(
        [r["name"] for r in results],
        [list(r["dice_by_id"].values()) for r in results],
        os.path.join(runs_dir, "dice_boxplot.png"),
    )
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", nargs="+", help="run folder(s) to evaluate")
    target.add_argument("--all", action="store_true", help="every run under --runs-dir, then results.md")
    parser.add_argument("--runs-dir", default="runs", help="where --all looks (default: %(default)s)")
    parser.add_argument(
        "--at",
        choices=("input", "original"),
        default="input",
        help="score at the training resolution (as the reference) or at each image's "
        "original size (default: %(default)s)",
    )
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)"
    )
    parser.add_argument(
        "--empty",
        choices=("diagonal", "nan"),
        default="diagonal",
        help="surface distances when exactly one mask is empty (default: %(default)s)",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="evaluate on this data set's test split instead of the run's",
    )
    parser.add_argument(
        "--baseline", help="run name the p-values compare against (default: the plain baseline run)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="re-evaluate runs whose results are up to date")
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave out unusable test files instead of stopping"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)

    from data_pipeline.errors import DataError
    from models.inference import ModelLoadError

    options = {
        "at": args.at,
        "tta": args.tta,
        "threshold": args.threshold,
        "empty": args.empty,
        "data": [os.path.abspath(p) for p in args.data] if args.data else None,
        "batch_size": args.batch_size,
        "skip_bad": args.skip_bad,
    }
    try:
        if args.all:
            path = evaluate_all(args.runs_dir, args.baseline, args.force, **options)
            with open(path) as handle:
                print(handle.read())
            print(f"wrote {path}")
            return 0
        for run in args.run:
            summary = evaluate_run(os.path.abspath(run), **options)
            m = summary["metrics"]
            print(
                f"{run}: Dice {m['dice']['mean']:.4f} [{m['dice']['ci95'][0]:.4f}, {m['dice']['ci95'][1]:.4f}]  "
                f"Jaccard {m['jaccard']['mean']:.4f}  HD {m['hd']['mean']:.3f}  ASD {m['asd']['mean']:.3f}  "
                f"test loss {summary['test_loss']:.4f}  ({summary['n']} images, "
                f"{sum(summary['empty_cases'].values())} with an empty mask)"
            )
        return 0
    except (EvaluationError, DataError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
