"""Memory of the training pipeline on a set larger than one would cache in RAM: N synthetic
1024x768 pairs (the synthetic generator, upscaled to JPEG), read at --image-size 512 for 1.25
epochs with `--cache disk` and with `--cache memory`, each in a fresh process. Reports the peak
RSS and the delivery rate of each; with the disk cache memory must not grow with the set.
  python -m bench.streaming [--pairs 2000] [--size 512]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from bench.report import finish, parser

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.tfdata import make_dataset, steps_per_epoch
pairs = discover_pairs({data!r}).splits["train"]
ds = make_dataset(pairs, {size}, {batch}, training=True, seed=0, cache={cache!r}, cache_dir={cache_dir!r})
steps = int(1.25 * steps_per_epoch(len(pairs), {batch}))
start = time.perf_counter()
for _ in ds.take(steps):
    pass
seconds = time.perf_counter() - start
print(json.dumps({{"peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "img_per_s": steps * {batch} / seconds, "seconds": seconds}}))
"""


def write_pairs(folder: str, n: int, size=(768, 1024)) -> None:
    import cv2
    import numpy as np

    from skinseg.data_pipeline.image_io import write_image
    from skinseg.data_pipeline.synthetic import synthetic_pair

    for split in ("image", "label"):
        os.makedirs(os.path.join(folder, "training", split), exist_ok=True)
    for k in range(n):
        image, mask = synthetic_pair(0, k, (192, 256))
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask.astype(np.uint8) * 255, size[::-1], interpolation=cv2.INTER_LINEAR)
        write_image(os.path.join(folder, "training", "image", f"S_{k:06d}.jpg"), image, quality=90)
        write_image(
            os.path.join(folder, "training", "label", f"S_{k:06d}_segmentation.png"),
            (mask > 127).astype(np.uint8) * 255,
        )


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        write_pairs(os.path.join(work, "data"), args.pairs)
        made = time.perf_counter() - start
        for cache in ("disk", "memory"):
            script = CHILD.format(
                root=root, data=os.path.join(work, "data"), size=args.size, batch=args.batch, cache=cache,
                cache_dir=os.path.join(work, f"cache-{cache}"),
            )  # fmt: skip
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            decoded_gb = args.pairs * args.size * args.size * 4 / 2**30
            rows.append({"cache": cache, **result, "decoded_set_GB": decoded_gb})
    finish(
        "streaming",
        args,
        rows,
        ["cache", "peak_rss_MB", "img_per_s", "seconds", "decoded_set_GB"],
        {
            "disk_peak_rss_MB": rows[0]["peak_rss_MB"],
            "memory_over_disk_rss": rows[1]["peak_rss_MB"] / rows[0]["peak_rss_MB"],
        },
        notes=f"{args.pairs} synthetic 1024x768 JPEG pairs (written in {made:.0f} s) at {args.size} px, batch "
        f"{args.batch}, 1.25 epochs (the second epoch reads the cache)",
    )


if __name__ == "__main__":
    main()
