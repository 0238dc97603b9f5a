"""The CPU-budget real-data recipe end to end: train.py on ../shared/data/isic_seed128 (validation
carved from the 800 training images), then evaluate.py on the 200 test images, printing the
results-table row. The default --epochs 3 takes minutes; the recipe the README quotes is --epochs 15.
  python -m bench.accuracy [--epochs 15] [--data PATH]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.data import REAL
from bench.report import finish, metric_means, parser

RECIPE = ["--recipe", "best"]  # skinseg/training/recipes.py


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data", default=REAL)
    p.add_argument("--runs-dir", default=os.path.join("bench", "out", "accuracy_runs"))
    args = p.parse_args(argv)
    if not os.path.isdir(args.data):
        print(f"bench.accuracy: {args.data} not found (the shared ISIC set); pass --data")
        print("RATIOS skipped=1")
        return
    run = os.path.join(args.runs_dir, f"baseline-cpu-recipe-{args.epochs}ep")
    train_cmd = [
        sys.executable,
        "train.py",
        *RECIPE,
        "--epochs",
        str(args.epochs),
        "--data",
        args.data,
        "--out",
        run,
        "--overwrite",
        "--verbose",
        "2",
    ]
    start = time.perf_counter()
    subprocess.run(train_cmd, check=True)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "evaluate.py", "--all", "--runs-dir", args.runs_dir, "--force"], check=True
    )
    eval_s = time.perf_counter() - start
    from skinseg.core.run_folder import RunFolder

    summary = RunFolder(run).read_summary()
    m = summary["metrics"]
    row = {
        "run": os.path.basename(run),
        "epochs": args.epochs,
        "train_min": train_s / 60,
        "eval_s": eval_s,
        "train_loss": summary["train_loss"],
        "test_loss": summary["test_loss"],
        **metric_means(summary),
        "best_epoch": summary["best_epoch"],
    }
    finish(
        "accuracy",
        args,
        [row],
        list(row),
        {"test_dice": m["dice"]["mean"]},
        notes="command: " + " ".join(train_cmd[1:]),
    )


if __name__ == "__main__":
    main()
