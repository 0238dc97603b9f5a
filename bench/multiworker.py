"""Two workers against one: the same training (same data, global batch and epochs) in one process
and in two `train.py` processes under MultiWorkerMirroredStrategy on localhost ports. Reports the
median step time of each (epochs after the first, which includes tracing) and their ratio. On one
machine the two workers share its cores, so this measures the strategy's overhead (collectives,
synchronized BatchNorm), not a speed-up; across two machines each worker has its own.
  python -m bench.multiworker [--epochs 4] [--width 16] [--size 64]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

from bench.report import finish, parser


def _step_seconds(run: str, steps: int) -> float:
    from skinseg.core.run_folder import RunFolder

    times = [row["time_s"] for row in RunFolder(run).read_history()[1:]]
    return statistics.median(times) / steps


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train", type=int, default=128, help="training pairs (synthetic)")
    args = p.parse_args(argv)
    from skinseg.data_pipeline.synthetic import generate_synthetic
    from skinseg.training.distribute import local_cluster

    with tempfile.TemporaryDirectory() as work:
        data = generate_synthetic(os.path.join(work, "data"), args.train + args.train // 4, 8)
        common = [
            "--width", str(args.width), "--image-size", str(args.size), "--batch-size", str(args.batch),
            "--epochs", str(args.epochs), "--val-fraction", "0.2", "--data", data, "--verbose", "2",
        ]  # fmt: skip
        steps = int(args.train * 1.25 * 0.8) // args.batch
        one = os.path.join(work, "one")
        subprocess.run([sys.executable, "train.py", *common, "--out", one], check=True, capture_output=True)
        processes = []
        for tf_config in local_cluster(2):
            env = {**os.environ, "TF_CONFIG": tf_config}
            out = os.path.join(work, "two")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "train.py", *common, "--strategy", "multiworker", "--out", out],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for process in processes:
            _, err = process.communicate()
            if process.returncode:
                raise SystemExit(err.decode()[-2000:])
        rows = [
            {"workers": 1, "step_ms": 1000 * _step_seconds(one, steps)},
            {"workers": 2, "step_ms": 1000 * _step_seconds(os.path.join(work, "two"), steps)},
        ]
    finish(
        "multiworker",
        args,
        rows,
        ["workers", "step_ms"],
        {"two_over_one_step_time": rows[1]["step_ms"] / rows[0]["step_ms"]},
        notes=f"baseline UNet width {args.width}, {args.size} px, global batch {args.batch}, {steps} steps per "
        f"epoch, median over epochs 2-{args.epochs}; both workers on this machine's {os.cpu_count()} cores",
    )


if __name__ == "__main__":
    main()
