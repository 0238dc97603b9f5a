"""Training-step throughput per architecture, and how close it gets to the hardware.

Each (architecture, size) runs in its own process, so peak memory is its own. Achieved FLOP/s
counts a training step as 3x the forward FLOPs (backward ~2x forward), forward FLOPs from
TensorFlow's profiler; the ceiling is a 2048x2048 fp32 matmul measured in the same run.
Default: CPU-sized widths (models.registry.CPU_SIZED); --full: the presets as they are.
  python -m bench.train [--full] [--models baseline hardnet_mseg] [--sizes 128 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.report import finish, matmul_peak_flops, parser, peak_rss_mb


def measure(name: str, size: int, full: bool, batch: int, steps: int) -> dict:
    import time

    import numpy as np

    from skinseg.losses import get_loss
    from skinseg.models.complexity import forward_flops
    from skinseg.models.registry import CPU_SIZED, build_model
    from skinseg.training.trainer import DiceScore, SegmentationTrainer

    overrides = {} if full else CPU_SIZED[name]
    network = build_model(name, size, **overrides)
    trainer = SegmentationTrainer(network)
    trainer.compile(optimizer="adam", loss=get_loss("bce"), metrics=[DiceScore()])
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3)).astype("float32")
    y = (rng.random((batch, size, size, 1)) > 0.5).astype("float32")
    for _ in range(2):  # tracing, then one warm step
        trainer.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_on_batch(x, y)
    seconds = (time.perf_counter() - start) / steps
    flops = forward_flops(network)
    return {
        "model": name,
        "width": overrides.get("width", "preset"),
        "size": size,
        "batch": batch,
        "params_M": network.count_params() / 1e6,
        "fwd_GFLOP": flops / 1e9,
        "img_per_s": batch / seconds,
        "achieved_GFLOPs": 3 * flops * batch / seconds / 1e9,
        "peak_rss_MB": peak_rss_mb(),
    }


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 4, --full: 10)")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    steps = args.steps or (10 if args.full else 4)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.full, args.batch, steps)))
        return
    from skinseg.models.registry import PRESETS

    peak = matmul_peak_flops()
    rows = []
    for size in args.sizes:
        for name in args.models or PRESETS:
            cmd = [
                sys.executable,
                "-m",
                "bench.train",
                "--one",
                name,
                str(size),
                "--batch",
                str(args.batch),
                "--steps",
                str(steps),
            ] + (["--full"] if args.full else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"  {name} @{size} failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
                rows.append({"model": name, "size": size, "img_per_s": None})
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["of_matmul_peak"] = row["achieved_GFLOPs"] * 1e9 / peak
            rows.append(row)
            print(
                f"  {name} @{size}: {row['img_per_s']:.2f} img/s, {row['of_matmul_peak']:.0%} of peak",
                file=sys.stderr,
            )
    base = next(
        (r for r in rows if r["model"] == "baseline" and r["size"] == 128 and r.get("img_per_s")), None
    )
    ratios = {"baseline_128_of_matmul_peak": base["of_matmul_peak"]} if base else {}
    finish(
        "train",
        args,
        rows,
        [
            "model",
            "width",
            "size",
            "batch",
            "params_M",
            "fwd_GFLOP",
            "img_per_s",
            "achieved_GFLOPs",
            "of_matmul_peak",
            "peak_rss_MB",
        ],
        ratios,
        notes=f"fp32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s",
    )


if __name__ == "__main__":
    main()
