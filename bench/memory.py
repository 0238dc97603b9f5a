"""Peak memory of predict.py over a folder of large images: it must stay flat as the folder grows.
Writes N synthetic 4000x3000 dermoscopy-like JPEGs (the synthetic generator, upscaled), runs
predict.py on 10 and on N of them in fresh processes, and reports each peak RSS.
  python -m bench.memory [--images 200] [--overlay]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import cv2

from bench.report import finish, parser

CHILD = """
import json, resource, sys, time
sys.argv = ["predict.py", *{argv!r}]
from skinseg.cli import predict
start = time.perf_counter()
code = predict.main(sys.argv[1:])
print(json.dumps({{"code": code, "seconds": time.perf_counter() - start,
                  "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--overlay", action="store_true")
    args = p.parse_args(argv)
    from skinseg.data_pipeline.image_io import write_image
    from skinseg.data_pipeline.synthetic import synthetic_pair
    from skinseg.models.registry import build_model

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as work:
        model = os.path.join(work, "model.keras")
        build_model("baseline", 128, width=32).save(model)
        rows = []
        for count in (10, args.images):
            folder = os.path.join(work, f"in{count}")
            os.makedirs(folder)
            for k in range(count):
                image, _ = synthetic_pair(0, k % 10, (300, 400))
                write_image(
                    os.path.join(folder, f"big{k:04d}.jpg"),
                    cv2.resize(image, (4000, 3000), interpolation=cv2.INTER_CUBIC),
                    quality=85,
                )
            argv_ = ["--model", model, folder, "--out", os.path.join(work, f"out{count}")]
            argv_ += ["--overlay"] if args.overlay else []
            done = subprocess.run(
                [sys.executable, "-c", CHILD.format(argv=argv_)],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(
                {
                    "images": count,
                    "size": "4000x3000",
                    "overlay": args.overlay,
                    "peak_rss_MB": result["peak_rss_MB"],
                    "img_per_s": count / result["seconds"],
                }
            )
    finish(
        "memory",
        args,
        rows,
        ["images", "size", "overlay", "peak_rss_MB", "img_per_s"],
        {"peak_rss_growth_MB": rows[1]["peak_rss_MB"] - rows[0]["peak_rss_MB"]},
    )


if __name__ == "__main__":
    main()
