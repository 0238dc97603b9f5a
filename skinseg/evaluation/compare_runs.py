"""Every run under a folder -> RUNS/results.md, results.csv, results.tex (one section per test set,
one row per run or external evaluation) and a per-image Dice box plot per test set."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re

from skinseg.core.atomic import write_text
from skinseg.core.errors import SkinsegError
from skinseg.core.locking import FolderLock
from skinseg.core.run_folder import RunFolder, file_digest
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.evaluation.external import EXTERNAL, EvalFolder, evaluate_models, external_folders
from skinseg.evaluation.figures import dice_boxplot
from skinseg.evaluation.score_run import (
    EvalSettings,
    EvaluationError,
    evaluate_run,
    evaluation_is_current,
    test_set_record,
)
from skinseg.evaluation.spacing import spacing_digest
from skinseg.evaluation.table import (
    csv_text,
    cv_groups,
    render_by_source,
    render_cross_validation,
    render_latex,
    render_repeats,
    render_results,
    table_csv_rows,
)
from skinseg.training.config import RunConfig

log = logging.getLogger("skinseg")


def find_runs(runs_dir: str) -> list[RunFolder]:
    if not os.path.isdir(runs_dir):
        raise EvaluationError(f"{runs_dir}: no such folder (train a model first, or pass --runs-dir)")
    runs = (RunFolder(os.path.join(runs_dir, name)) for name in sorted(os.listdir(runs_dir)))
    return [run for run in runs if run.has_config()]


def pick_baseline(runs: list[RunFolder]) -> str | None:
    """The plain baseline: model baseline with no augmentation, flooding or LR schedule."""
    for run in runs:
        c = RunConfig.load(run.config_path)
        if c.model == "baseline" and not (c.aug or c.flooding or c.lr_schedule != "none"):
            return run.name
    return None


def repeat_groups(results: list[dict], runs: list[RunFolder]) -> dict[str, list[dict]]:
    """Evaluated runs grouped by their configuration without the seed, in table order; a group
    is labelled by its first run's name without its -s<seed> suffix."""
    by_name = {run.name: run for run in runs}
    members: dict[str, list[dict]] = {}
    for result in results:
        try:
            config = RunConfig.load(by_name[result["name"]].config_path)
        except SkinsegError:
            continue
        identity = {k: v for k, v in config.recorded().items() if k != "seed"}
        key = json.dumps({**identity, "epochs": config.epochs}, sort_keys=True)
        members.setdefault(key, []).append(result)
    groups: dict[str, list[dict]] = {}
    for group in members.values():
        label = re.sub(r"-s\d+$", "", group[0]["name"])
        while label in groups:  # another configuration with the same name stem
            label += "'"
        groups[label] = group
    return groups


def dice_by_id(run: RunFolder) -> dict[str, float]:
    return {row["id"]: float(row["dice"]) for row in run.read_per_image()}


def _result(name: str, summary: dict, folder, config: RunConfig | None) -> dict:
    return {"name": name, "summary": summary, "dice_by_id": dice_by_id(folder), "config": config}


def _config(run: RunFolder) -> RunConfig | None:
    try:
        return RunConfig.load(run.config_path)
    except SkinsegError:
        return None


def _external_is_current(
    folder: EvalFolder, settings: dict, digests: list[str], save_probs: bool, test_digest: str | None
) -> bool:
    """An external evaluation of exactly these networks (by digest) with these settings, on the same
    test pairs (by content), the same spacing (by content), whose summary names its per-image
    table: anything else is scored again."""
    try:
        summary = folder.read_summary()
        if not os.path.exists(folder.per_image_path):
            return False
        table = file_digest(folder.per_image_path)
    except (SkinsegError, OSError, ValueError):
        return False
    recorded = [m.get("sha256") for m in summary.get("models", []) if isinstance(m, dict)]
    if save_probs and not os.path.isdir(folder.probabilities_dir):
        return False
    return (
        summary.get("settings") == settings
        and recorded == digests
        and summary.get("per_image_sha256") == table
        and summary.get("spacing_digest") == spacing_digest(settings.get("spacing"))
        and (test_digest is None or summary.get("test_set", {}).get("digest") == test_digest)
    )


def _test_digest(data: tuple[str, ...] | None) -> str | None:
    """The content digest of a data set's test pairs as discovered (no decoding), or None."""
    if not data:
        return None
    try:
        found = discover_pairs(data[0], data[1] if len(data) > 1 else None)
        name = "test" if "test" in found.splits else "all"
        return test_set_record(found.splits.get(name, []), "")["digest"]
    except (SkinsegError, OSError):
        return None


def _stale(summary: dict) -> str | None:
    """Why an external evaluation no longer describes its model (a file replaced or removed)."""
    for member in summary.get("models", []):
        path = member.get("path", "")
        if not os.path.isfile(path):
            return f"{path} is gone"
        if file_digest(path) != member.get("sha256"):
            return f"{path} changed since it was scored"
    return None


def evaluate_all(
    runs_dir: str,
    settings: EvalSettings = EvalSettings(),
    *,
    baseline: str | None = None,
    force: bool = False,
    batch_size: int = 16,
    skip_bad: bool = False,
    allow_overlap: bool = False,
    save_probs: bool = False,
    allow_empty_masks: bool = False,
) -> str:
    """Score every run under RUNS on its own test split (and, with `settings.data`, on that set
    too, as external evaluations), then write RUNS/results.md, results.csv and results.tex: one
    section per test set (by content), cross-validations in their own section. Returns the path
    of results.md. One `--all` per runs folder at a time (the folder is locked); a run that
    train.py holds is left out, never written into."""
    find_runs(runs_dir)  # a missing folder is said as such, before the lock would create it
    with FolderLock(runs_dir, "its results (evaluate.py --all)", EvaluationError):
        return _evaluate_all(
            runs_dir,
            settings,
            baseline=baseline,
            force=force,
            batch_size=batch_size,
            skip_bad=skip_bad,
            allow_overlap=allow_overlap,
            save_probs=save_probs,
            allow_empty_masks=allow_empty_masks,
        )


def _evaluate_all(
    runs_dir: str,
    settings: EvalSettings,
    *,
    baseline: str | None,
    force: bool,
    batch_size: int,
    skip_bad: bool,
    allow_overlap: bool,
    save_probs: bool,
    allow_empty_masks: bool,
) -> str:
    runs = find_runs(runs_dir)
    if not runs and not external_folders(runs_dir):
        raise EvaluationError(f"{runs_dir}: no run folders (folders with a config.json) to evaluate")
    own = dataclasses.replace(settings, data=None)
    test_digest = _test_digest(settings.data)
    results, left_out = [], []
    for run in runs:
        if not os.path.exists(run.best_network):
            left_out.append((run.name, "no best.keras yet (training did not finish an epoch)"))
            log.warning("%s: %s; left out", run.path, left_out[-1][1])
            continue
        try:  # a damaged eval/summary.json is not up to date: it is scored again, not fatal
            current = not force and evaluation_is_current(
                run, own.to_json(), figures=True, save_probs=save_probs
            )
        except (SkinsegError, OSError, ValueError, KeyError, TypeError, AttributeError):
            current = False
        try:
            if current:
                log.info("%s: results are up to date", run.path)
                summary = run.read_summary()
            else:
                log.info("evaluating %s", run.path)
                summary = evaluate_run(
                    run,
                    own,
                    batch_size=batch_size,
                    skip_bad=skip_bad,
                    allow_overlap=allow_overlap,
                    save_probs=save_probs,
                    allow_empty_masks=allow_empty_masks,
                )
            results.append(_result(run.name, summary, run, _config(run)))
        except SkinsegError as err:  # one run's problem must not cost the whole table
            left_out.append((run.name, str(err).splitlines()[0]))
            log.warning("%s: left out: %s", run.path, left_out[-1][1])
        if settings.data:  # also for a run without a test split of its own (--data IMAGES MASKS)
            try:
                digest = file_digest(run.best_network)
                done = not force and any(
                    _external_is_current(f, settings.to_json(), [digest], save_probs, test_digest)
                    for f in external_folders(runs_dir)
                )
                if not done:
                    evaluate_models(
                        [run.path],
                        settings,
                        runs_dir=runs_dir,
                        batch_size=batch_size,
                        skip_bad=skip_bad,
                        allow_overlap=allow_overlap,
                        save_probs=save_probs,
                        allow_empty_masks=allow_empty_masks,
                    )
            except SkinsegError as err:
                left_out.append((f"{run.name} on {settings.data[0]}", str(err).splitlines()[0]))
                log.warning("%s: left out on %s: %s", run.path, settings.data[0], left_out[-1][1])
    scoring = {k: v for k, v in settings.to_json().items() if k != "data"}
    for folder in external_folders(runs_dir):
        try:
            summary = folder.read_summary()
            theirs = {k: v for k, v in summary.get("settings", {}).items() if k != "data"}
            if theirs != scoring:  # one table, one way of scoring (its note says which)
                left_out.append((f"{EXTERNAL}/{folder.name}", "scored with other settings than this table's"))
                continue
            why = _stale(summary)
            if why:
                left_out.append((f"{EXTERNAL}/{folder.name}", f"{why}; evaluate it again"))
                continue
            results.append(_result(f"{summary['run']} ({EXTERNAL})", summary, folder, None))
        except (SkinsegError, OSError, ValueError, KeyError, TypeError) as err:
            left_out.append((f"{EXTERNAL}/{folder.name}", str(err).splitlines()[0]))
    if not results:
        reasons = "; ".join(f"{name}: {why}" for name, why in left_out)
        raise EvaluationError(f"{runs_dir}: no run could be evaluated ({reasons})")
    names = [r["name"] for r in results]
    if baseline is not None and baseline not in names:
        raise EvaluationError(f"--baseline {baseline}: no such evaluated run; runs: {', '.join(names)}")
    folds = [r for r in results if r["config"] is not None and r["config"].folds]
    sections = test_set_sections([r for r in results if r not in folds])
    by_name = {run.name: run for run in runs}
    parts, csv_rows, latex = [], [], []
    for index, (test_set, members) in enumerate(sections.items()):
        base = (
            baseline
            if baseline in [m["name"] for m in members]
            else pick_baseline([by_name[m["name"]] for m in members if m["name"] in by_name])
        )
        stem = f"dice_boxplot-{index + 1}"
        dice_boxplot(
            [m["name"] for m in members],
            [list(m["dice_by_id"].values()) for m in members],
            os.path.join(runs_dir, stem),
            f"Per-image Dice on {test_set['name']} (test set {test_set['digest'][:8]}, n = {test_set['n']})",
        )
        table = render_results(members, base)
        parts.append(
            f"## Test set {index + 1}: {test_set['name']} ({test_set['n']} images; digest "
            f"{test_set['digest'][:12]})\n\n"
            + table
            + render_repeats(repeat_groups([m for m in members if m["name"] in by_name], runs), base)
            + render_by_source(members)
            + f"\nPer-image Dice: [{stem}.png]({stem}.png) ([PDF]({stem}.pdf), [SVG]({stem}.svg)).\n"
        )
        csv_rows += table_csv_rows(members, base, test_set)
        latex.append(render_latex(members, test_set))
    if folds:
        parts.append(render_cross_validation(cv_groups(folds)))
    path = os.path.join(runs_dir, "results.md")
    missing = "".join(f"\n- {name}: {why}" for name, why in left_out)
    write_text(
        path,
        "# Results\n\n"
        + _note(settings)
        + "\n".join(parts)
        + (f"\n## Left out\n{missing}\n" if left_out else ""),
    )
    write_text(os.path.join(runs_dir, "results.csv"), csv_text(csv_rows))
    write_text(os.path.join(runs_dir, "results.tex"), "\n".join(latex))
    return path


def test_set_sections(results: list[dict]) -> dict:
    """Results grouped by the content of their test set (summary["test_set"]["digest"]), the
    largest set first; each key is the test-set record."""
    groups: dict[str, list[dict]] = {}
    records = {}
    for result in results:
        record = result["summary"].get("test_set") or {
            "name": "unknown",
            "n": result["summary"].get("n"),
            "digest": "unknown",
        }
        records.setdefault(record["digest"], record)
        groups.setdefault(record["digest"], []).append(result)
    order = sorted(groups, key=lambda d: (-(records[d]["n"] or 0), records[d]["name"]))
    return {_Key(records[d]): groups[d] for d in order}


class _Key(dict):
    """A test-set record usable as a dict key (by its digest)."""

    def __hash__(self):
        return hash(self["digest"])


def _note(settings: EvalSettings) -> str:
    where = (
        "each image's original size (predictions resized back, then thresholded)"
        if settings.at == "original"
        else "the model's input size (masks resampled like the images)"
    )
    masks = (
        f"threshold {settings.threshold}"
        if settings.threshold is not None
        else "each run's mask step (column Mask step): chosen on its validation split, or fixed at threshold "
        "0.5 without clean-up (--mask-step fixed, the reference's rounding); an ensemble's: threshold 0.5"
    )
    return (
        f"Test-set results, scored at {where}; {masks}"
        f"{', flip TTA' if settings.tta else ''}. One section per test set, identified by its content (a "
        "digest of its images and masks, not its path): best values (bold), the baseline and the p-values "
        "are within a section. Each run's model is its best.keras, selected on the validation split; rows "
        "marked (external) are models or masks scored with `evaluate.py --model/--predictions --data` "
        "(RUNS/external/). Distances in pixels"
        f"{' (or the units of --spacing ' + settings.spacing + ')' if settings.spacing else ''}. "
        "The reference's columns: ASD (ITK avg. Hausdorff) and Hausdorff distance (ITK) are SimpleITK's "
        "HausdorffDistanceImageFilter on the whole masks (GetAverageHausdorffDistance, "
        "GetHausdorffDistance: region distances over every pixel of each mask), as the reference "
        "computed them. Boundary HD and HD95 are over the masks' boundary pixels (MedPy's hd, hd95); "
        "MedPy's directed ASD and its symmetric ASSD follow. Empty masks: both empty, every distance 0; "
        "one empty, every distance is the image diagonal (the reference scored 100 px, its SimpleITK "
        "call failing) and the image is counted in the Empty column. "
        "p: two-sided Wilcoxon signed-rank test of per-image Dice against the section's baseline run. "
        "Machine-readable: results.csv; LaTeX: results.tex.\n\n"
    )
