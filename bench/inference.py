"""Inference throughput of the Keras model, the exported SavedModel and the TFLite model, at 128
and 256 px, batch 1 and 32 (default: the CPU-sized baseline UNet; --full: the preset).
  python -m bench.inference [--full] [--model NAME]
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from bench.report import finish, parser, timed


def runners(model, size, work):
    import tensorflow as tf

    from skinseg.models.inference import Forward, predict_probabilities

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


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="baseline")
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
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
    best = {r["runtime"]: r["img_per_s"] for r in rows if r["size"] == args.sizes[0] and r["batch"] == 32}
    ratios = {
        f"{k}_over_keras_{args.sizes[0]}px_b32": v / best["keras"] for k, v in best.items() if k != "keras"
    }
    finish(
        "inference",
        args,
        rows,
        ["runtime", "size", "batch", "img_per_s", "ms_per_batch"],
        ratios,
        notes=f"model: {args.model} ({'preset' if args.full else 'CPU-sized'}), fp32",
    )


if __name__ == "__main__":
    main()
