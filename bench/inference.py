"""Inference throughput of the Keras model, the exported SavedModel and the TFLite model, at 128
and 256 px, batch 1 and 32 (default: the CPU-sized baseline UNet; --full: the preset); then
`predict_folder` end to end (decoding JPEGs, resizing, inference, resizing back, writing PNGs) on
--images full-resolution JPEGs against the model alone at the same batch size.
  python -m bench.inference [--full] [--model NAME] [--images 48] [--image-size 1024x768]
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from bench.report import finish, parser, timed


def runners(model, size, work):
    import tensorflow as tf

    from skinseg.inference.network import Forward, predict_probabilities

    export = os.path.join(work, f"saved_{size}")
    model.export(export, format="tf_saved_model", verbose=False)
    saved = tf.saved_model.load(export)
    tflite = tf.lite.TFLiteConverter.from_saved_model(export).convert()
    interpreter = tf.lite.Interpreter(model_content=tflite, num_threads=os.cpu_count())
    interpreter.allocate_tensors()

    forward = Forward(model)

    def keras_run(x):
        return predict_probabilities(forward, x)

    def saved_run(x):
        return saved.serve(tf.constant(x)).numpy()

    def tflite_run(x):
        detail = interpreter.get_input_details()[0]
        if tuple(detail["shape"]) != x.shape:
            interpreter.resize_tensor_input(detail["index"], x.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return {"keras": keras_run, "saved_model": saved_run, "tflite": tflite_run}


def end_to_end(model, work: str, count: int, shape: tuple[int, int], batch: int, path: str | None) -> dict:
    """images/s of predict_folder on `count` JPEGs of `shape` (H, W) vs the model alone."""
    import time

    import keras

    from bench.streaming import write_pairs
    from skinseg.inference.description import PRETRAINED
    from skinseg.inference.network import Forward
    from skinseg.inference.predict_folder import predict_folder

    folder = os.path.join(work, "jpegs")
    write_pairs(folder, count, shape)
    # A trained network: an untrained one's speckled masks cost several times more to encode.
    path = path or (PRETRAINED if os.path.exists(PRETRAINED) else None)
    if path is None:
        path = os.path.join(work, "model.keras")
        model.save(path)
    images = os.path.join(folder, "training", "image")
    predict_folder(path, [images], os.path.join(work, "warm"), batch_size=batch)  # warms file caches
    result = predict_folder(path, [images], os.path.join(work, "masks"), batch_size=batch)
    e2e = result.images_per_s  # from the first batch to the last mask (tracing included; loading not)
    # After the first batch (tracing and the first decode):
    steady = (result.written - batch) / (result.seconds - result.first_batch_seconds)
    network = keras.models.load_model(path, compile=False)
    forward = Forward(network)
    x = np.random.default_rng(0).random((batch, *network.input_shape[1:])).astype("float32")
    forward(x)
    start = time.perf_counter()
    steps = max(1, count // batch)
    for _ in range(steps):
        forward(x)
    alone = steps * batch / (time.perf_counter() - start)
    return {
        "end_to_end_img_per_s": e2e,
        "steady_img_per_s": steady,
        "startup_s": result.first_batch_seconds,
        "model_only_img_per_s": alone,
        "written": result.written,
        "model": os.path.basename(path),
    }


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="baseline")
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--images", type=int, default=320, help="JPEGs for the end-to-end measurement")
    p.add_argument("--image-size", default="1024x768", help="their size, WxH")
    p.add_argument("--batch", type=int, default=8, help="end-to-end batch size")
    p.add_argument(
        "--e2e-model", metavar="FILE", help="trained .keras for end to end (default: the shipped one)"
    )
    args = p.parse_args(argv)
    import keras

    from skinseg.models.registry import CPU_SIZED, build_model

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            model = build_model(args.model, size, **({} if args.full else CPU_SIZED[args.model]))
            for name, run in runners(model, size, work).items():
                for batch in (1, 32):
                    x = np.random.default_rng(0).random((batch, size, size, 3)).astype("float32")
                    seconds = timed(lambda run=run, x=x: run(x), repeat=3 if batch == 32 else 10, warmup=1)
                    rows.append(
                        {
                            "runtime": name,
                            "size": size,
                            "batch": batch,
                            "img_per_s": batch / seconds,
                            "ms_per_batch": 1000 * seconds,
                        }
                    )
            keras.backend.clear_session()
        model = build_model(args.model, args.sizes[0], **({} if args.full else CPU_SIZED[args.model]))
        w, h = (int(v) for v in args.image_size.lower().split("x"))
        e2e = end_to_end(model, work, args.images, (h, w), args.batch, args.e2e_model)
    rows.append(
        {
            "runtime": f"predict_folder end to end, {w}x{h} JPEG",
            "size": args.sizes[0],
            "batch": args.batch,
            "img_per_s": e2e["end_to_end_img_per_s"],
        }
    )
    rows.append(
        {
            "runtime": "  the same, after its first batch",
            "size": args.sizes[0],
            "batch": args.batch,
            "img_per_s": e2e["steady_img_per_s"],
        }
    )
    rows.append(
        {
            "runtime": "same model alone (Forward)",
            "size": args.sizes[0],
            "batch": args.batch,
            "img_per_s": e2e["model_only_img_per_s"],
        }
    )
    best = {
        r["runtime"]: r["img_per_s"]
        for r in rows
        if r["size"] == args.sizes[0]
        and r["batch"] == 32
        and r["runtime"] in ("keras", "saved_model", "tflite")
    }
    ratios = {
        f"{k}_over_keras_{args.sizes[0]}px_b32": v / best["keras"] for k, v in best.items() if k != "keras"
    }
    ratios["end_to_end_over_model_only"] = e2e["end_to_end_img_per_s"] / e2e["model_only_img_per_s"]
    ratios["steady_end_to_end_over_model_only"] = e2e["steady_img_per_s"] / e2e["model_only_img_per_s"]
    finish(
        "inference",
        args,
        rows,
        ["runtime", "size", "batch", "img_per_s", "ms_per_batch"],
        ratios,
        notes=f"model: {args.model} ({'preset' if args.full else 'CPU-sized'}), fp32; end to end: "
        f"{e2e['model']} on {args.images} JPEGs, start-up (tracing, first batch) "
        f"{e2e['startup_s']:.2f} s",
    )


if __name__ == "__main__":
    main()
