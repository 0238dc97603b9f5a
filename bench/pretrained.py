"""Trains the shipped model (`predict.py --model pretrained`) and, with --install, puts it in
models/pretrained/ with the files predict.py reads beside it and a model card whose numbers are
this run's.

The recipe is `--recipe best` at a width that keeps the file under 10 MB, on every training pair
the project has: the reference set's 800 (its 200 test images stay out and score the model) and
the 1,694 ISIC 2018 pairs of isic2018_extra128; validation is carved from each.

  python -m bench.pretrained [--epochs 15] [--width 16] [--install]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

from bench.data import REAL
from bench.report import finish, metric_means, parser

EXTRA = os.path.join(os.path.dirname(REAL), "isic2018_extra128")
TARGET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "skinseg", "models", "pretrained"
)
LIMIT_MB = 10.0
# bench.ablation's lever that trains this command, by the run's augmentation policy
LEVER_OF_POLICY = {"dermoscopy": "both data sets", "default": "both data sets, default policy"}


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--data", action="append", help="data sets (default: the two shared ISIC sets)")
    p.add_argument("--out", default=os.path.join("bench", "out", "pretrained_run"))
    p.add_argument("--install", action="store_true", help="copy the model into skinseg/models/pretrained/")
    p.add_argument("--skip-training", action="store_true", help="use the run already in --out")
    p.add_argument(
        "--aug-policy",
        choices=("default", "dermoscopy"),
        help="the augmentation policy (default: the recipe's, dermoscopy; the model shipped now was "
        "trained with default, before the recipe had the dermoscopy policy)",
    )
    p.add_argument(
        "--repeats",
        metavar="ABLATION_JSON",
        default=os.path.join("bench", "out", "ablation", "ablation.json"),
        help="bench.ablation's results, whose 'both data sets' runs (this command over seeds) the model "
        "card reports beside this run (default: %(default)s, when it exists)",
    )
    args = p.parse_args(argv)
    data = args.data or [REAL, EXTRA]
    missing = [d for d in data if not os.path.isdir(d)]
    if missing:
        print(f"bench.pretrained: {missing[0]} not found; pass --data")
        print("RATIOS skipped=1")
        return
    train_cmd = [sys.executable, "train.py", "--recipe", "best", "--width", str(args.width)]
    train_cmd += ["--epochs", str(args.epochs), "--out", args.out, "--verbose", "2"]
    if args.aug_policy:
        train_cmd += ["--aug-policy", args.aug_policy]
    for folder in data:
        train_cmd += ["--data", folder]
    train_s = 0.0
    if not args.skip_training:
        start = time.perf_counter()
        subprocess.run([*train_cmd, "--overwrite"], check=True)
        train_s = time.perf_counter() - start
    subprocess.run([sys.executable, "evaluate.py", "--run", args.out, "--force"], check=True)
    from skinseg.core.run_folder import RunFolder

    run = RunFolder(args.out)
    summary = run.read_summary()
    size_mb = os.path.getsize(run.best_network) / 1e6
    train_s = train_s or sum(float(r.get("time_s") or 0) for r in run.read_history())
    m = summary["metrics"]
    row = {
        "width": args.width,
        "epochs": args.epochs,
        "train_min": train_s / 60,
        "size_mb": size_mb,
        "params": summary["params"],
        **metric_means(summary, ("dice", "jaccard", "threshold_jaccard", "hd95", "avg_hausdorff")),
        "dice_ci": m["dice"]["ci95"],
        "mask_step": summary["postprocess"],
    }
    if args.install:
        if size_mb > LIMIT_MB:
            raise SystemExit(f"{run.best_network}: {size_mb:.1f} MB, over the {LIMIT_MB} MB limit")
        command = " ".join(train_cmd[1:]).replace(os.path.dirname(REAL), "../shared/data")
        install(run, summary, row, command, args.repeats)
    finish("pretrained", args, [row], [k for k in row if k != "mask_step"], {"test_dice": row["dice"]})


def _repeats(path: str, policy: str = "dermoscopy") -> list[dict]:
    """The same command's runs over seeds, from bench.ablation's "both data sets" lever for the
    model's augmentation policy (empty without them): each with its test Dice ("dice") and, where
    the lever kept the cross-source hold-out out of training, its Dice there ("held")."""
    if not path or not os.path.exists(path):
        return []
    lever = LEVER_OF_POLICY.get(policy, "both data sets")
    with open(path, encoding="utf-8") as handle:
        runs = json.load(handle).get(lever, {}).get("runs", [])
    return [{"dice": float(r["dice"]), "held": r.get("held")} for r in runs]


def install(run, summary: dict, row: dict, command: str, repeats_path: str | None = None) -> None:
    from skinseg.core.atomic import atomic_path, write_json, write_text
    from skinseg.inference.description import PRETRAINED
    from skinseg.training.config import RunConfig
    from skinseg.training.init_from import ARCHITECTURE

    os.makedirs(TARGET, exist_ok=True)
    with atomic_path(PRETRAINED) as tmp:
        shutil.copyfile(run.best_network, tmp)
    config = RunConfig.load(run.config_path)
    repeats = _repeats(repeats_path, config.aug_policy)  # the runs of the model's own setting
    write_json(os.path.join(TARGET, "preprocessing.json"), config.preprocessing.to_json())
    # what train.py --init-from pretrained builds (training/init_from.py)
    write_json(
        os.path.join(TARGET, "architecture.json"),
        {key: getattr(config, key) for key in ARCHITECTURE},
    )
    with open(run.postprocess_path, encoding="utf-8") as handle:
        post = json.load(handle)
    write_json(os.path.join(TARGET, "postprocess.json"), post)
    split = run.read_split_record()
    sources = {s["root"]: s for s in split.get("sources", [])}
    counts = {
        os.path.basename(root): {
            k: sum(1 for r in split[k] if r.get("source") == i) for k in ("train", "validation", "test")
        }
        for i, root in enumerate(sources)
    }
    write_text(os.path.join(TARGET, "MODEL_CARD.md"), card(config, summary, row, command, counts, repeats))


def card(config, summary: dict, row: dict, command: str, counts: dict, repeats: list[dict] = ()) -> str:
    from skinseg.evaluation.table import mean_sd

    m = summary["metrics"]
    # bench.ablation's "both data sets" lever is this command: trained on everything (no "held"), or,
    # by default, without the cross-source hold-out (scored there: what this model, which trained on
    # those images, would score on acquisitions it has not seen)
    lever = LEVER_OF_POLICY.get(getattr(config, "aug_policy", "dermoscopy"), "both data sets")
    same = [r["dice"] for r in repeats if r.get("held") is None]
    without = [r for r in repeats if r.get("held") is not None]
    if len(same) > 1:
        spread = (
            f'- The same command over {len(same)} seeds (bench.ablation, lever "{lever}"; this '
            f"model is one of them) scored Dice {mean_sd(same, '{:.4f}')} "
            f"(runs: {', '.join(f'{d:.4f}' for d in same)}): another run of it is about that far from "
            "this one."
        )
    elif len(without) > 1:
        spread = (
            f"- The same command without the cross-source hold-out, over {len(without)} seeds "
            f'(bench.ablation, lever "{lever}"), scored Dice '
            f"{mean_sd([r['dice'] for r in without], '{:.4f}')} on this test split: another run is about "
            "that far from this one."
        )
    else:
        spread = "- One training run (no seed repeats): another run of the same command differs by about 0.01 Dice."
    if without:
        held = mean_sd([r["held"] for r in without], "{:.4f}")
        spread += (
            "\n- Out of distribution: on the cross-source hold-out (bench.ablation --held-out, by default "
            "bench/cross_source_holdout.txt: later ISIC acquisitions), the same command trained without "
            f"those images scored Dice {held} over {len(without)} seed(s) (bench.ablation), against "
            f"{m['dice']['mean']:.4f} here in distribution; this model trained on them, so that is the "
            "estimate for acquisitions it has not seen."
        )
    else:
        spread += (
            "\n- Out of distribution: not measured for this command by bench.ablation (its lever "
            f'"{lever}" trains the command without the cross-source hold-out and scores it there).'
        )
    spread = "\n".join(textwrap.fill(line, width=100, subsequent_indent="  ") for line in spread.split("\n"))
    lo, hi = m["dice"]["ci95"]
    data_lines = "\n".join(
        f"| {name} | {c['train']} | {c['validation']} | {c['test']} |" for name, c in counts.items()
    )
    return f"""# Model card: skinseg-isic (the model `predict.py --model pretrained` uses)

A UNet (4 levels, {config.width} filters in the first, {summary["params"]:,} parameters,
{row["size_mb"]:.1f} MB) that segments the lesion in a dermoscopy image. Input: an RGB image of any
size, resized to {config.image_size}x{config.image_size}, then Shades-of-Gray colour constancy;
output: a lesion mask at the image's own size. Mask step chosen on the validation split:
{_describe(summary["postprocess"])}.

## Training
`python {command}` (`python -m bench.pretrained --install` reruns it and rewrites this card):
the project's best CPU recipe (`--recipe best`: Dice+BCE, Adam with cosine schedule, augmentation on
the accelerator with the {config.aug_policy} policy, colour constancy) at width {config.width}, small enough to ship in the
repository. {config.epochs} epochs ({row["train_min"]:.0f} min on a 2-core CPU), best epoch
{summary.get("best_epoch")} by validation Dice.

| data set | train | validation | test |
|---|---|---|---|
{data_lines}

## Data and licences
ISIC Archive images of the ISIC 2018 Task 1 challenge (its training and validation sets): the
reference's 800 training images (its 200 test images are held out to score the model) and 1,694
more; each under its own licence: CC-0, CC-BY or CC-BY-NC. The model is for **research
use**; it is not a medical device and must not be used for diagnosis.

## Metrics (the reference's 200 test images, never trained or selected on)
Scored at each image's original size as `evaluate.py` does (`python evaluate.py --run RUN`). These
test images are stored as 128x128 squares (the ISIC originals, stretched), so the distances are in
pixels of a 128x128 image; on a full-resolution photograph the same error spans proportionally more.

| Dice (95 % CI) | Jaccard | threshold-Jaccard | HD95 (px) | HD (px) | ITK average Hausdorff (px) |
|---|---|---|---|---|---|
| {m["dice"]["mean"]:.4f} ({lo:.4f}-{hi:.4f}) | {m["jaccard"]["mean"]:.4f} | {m["threshold_jaccard"]["mean"]:.4f} | {m["hd95"]["mean"]:.2f} | {m["hd"]["mean"]:.2f} | {m["avg_hausdorff"]["mean"]:.4f} |

## Known limits
- Trained on 128 px dermoscopy only: clinical (non-dermoscopic) photographs, and images whose
  lesion fills the frame or is cut by its border, are outside what it saw.
- Images are stretched to a square; very elongated images lose resolution along their long side.
{spread}
- ISIC's population (mostly fair skin, a few institutions); accuracy on other skin types and
  other clinics' devices is not measured here. On the cross-source check of models trained on the
  reference set only (1,694 other ISIC 2018 images), `predict.py --tta` (four flipped passes) raised
  Dice for every seed (BENCHMARKS.md, bench.ablation); for models trained like this one it changed
  the hold-out's Dice by under 0.001, so it is not applied by default.
- Which masks to distrust: `predict.py` flags masks whose confidence (predictions.csv) is below
  0.31; how well that confidence ranks masks by their real Dice out of distribution is measured in
  BENCHMARKS.md ("Per-image confidence"; `python -m bench.confidence` on labelled images of yours).
"""


def _describe(record: dict) -> str:
    from skinseg.inference.postprocess import PostProcessing

    return PostProcessing.from_json(record).describe()


if __name__ == "__main__":
    main()
