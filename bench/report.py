"""What every bench shares: the machine description, a plain-text table, the closing ratio line,
and the JSON record (with date, machine, command and git revision)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--full", action="store_true", help="full-size version (presets, more steps)")
    p.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    return p


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu"] = next(
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        pass
    return info


def git_revision() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def finish(
    name: str, args, rows: list[dict], columns: list[str], ratios: dict[str, float], notes: str = ""
) -> None:
    """Print the table, then the ratios as the last line; write JSON when asked."""
    print(table(rows, columns))
    if notes:
        print(notes)
    print("RATIOS " + "  ".join(f"{k}={v:.3g}" for k, v in ratios.items()))
    if args.json:
        record = {
            "bench": name,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable), "-m", f"bench.{name}", *sys.argv[1:]]),
            "git": git_revision(),
            "machine": machine(),
            "rows": rows,
            "ratios": ratios,
            "notes": notes,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2)


def timed(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def matmul_peak_flops(n: int = 2048, dtype: str = "float32") -> float:
    """Achieved FLOP/s of a large square matmul: this machine's practical fp32 ceiling."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)
    matmul = tf.function(lambda: tf.matmul(a, b))
    seconds = timed(lambda: matmul().numpy(), repeat=7, warmup=2)
    return 2 * n**3 / seconds


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def metric_means(
    summary: dict,
    keys=(
        "dice",
        "jaccard",
        "threshold_jaccard",
        "volume_similarity",
        "avg_hausdorff",
        "asd_medpy",
        "hd",
        "hd95",
    ),
) -> dict:
    """The mean of each metric of an evaluation summary, by name."""
    return {key: summary["metrics"][key]["mean"] for key in keys}
