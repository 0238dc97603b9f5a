"""Where a training step's time goes, layer by layer: why an architecture stays below the matmul
peak that `bench.train` compares it with.

Every layer of the network (the layers of a nested backbone too) is rebuilt alone from its
config, fed random tensors of its own input shapes at the training batch, and timed forward and
backward (gradients of its weights and inputs), as a training step runs it. The time of an empty
layer call (the dispatch overhead) is subtracted. Convolutions get their FLOPs (a multiply-add
counts 2; forward + backward = 3x forward) and achieved GFLOP/s; each dilated convolution is
also timed with dilation 1 (the same FLOPs and shapes), which measures what dilation costs.
Asymmetric kernels (1 x k, k x 1) have no equal-FLOP square twin: their group's GFLOP/s is
compared with the square kernels' instead.

Groups: convolutions by kernel, dilation and stride ("conv 3x3 d2"), and by the output's spatial
size; every other layer by class. Each group's share of the summed layer time and of the FLOPs
shows what holds the step back. The optimizer's update is timed alone (it touches every weight
and its two Adam moments), and the whole step as well, plain and with XLA (jit_compile), the one
switch that fuses the non-convolution layers.

  python -m bench.profile [--models deeper deeplabv3plus hardnet_mseg] [--size 128] [--batch 8]

Writes bench/out/profile/<model>.md (or --out) and prints each model's summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict

from bench.report import finish, matmul_peak_flops, parser

CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "SeparableConv2D")


def _leaf_layers(model):
    """(layer, input KerasTensors) for every layer, descending into nested functional models."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
            continue
        yield layer, layer.input


def _conv_flops(layer, batch: int) -> float:
    """Forward FLOPs of a convolution over the batch (2 per multiply-add)."""
    out = layer.output.shape
    kernel = layer.kernel_size
    cin = layer.input.shape[-1]
    if type(layer).__name__ == "DepthwiseConv2D":
        per_output = 2 * kernel[0] * kernel[1]
        channels = out[-1]
    elif type(layer).__name__ == "Conv2DTranspose":
        # each input pixel scatters a kernel's worth of multiply-adds
        inp = layer.input.shape
        return 2.0 * batch * inp[1] * inp[2] * cin * out[-1] * kernel[0] * kernel[1]
    else:
        per_output = 2 * kernel[0] * kernel[1] * cin // getattr(layer, "groups", 1)
        channels = out[-1]
    return float(batch) * out[1] * out[2] * channels * per_output


def _step_for(layer, shapes):
    """A compiled forward+backward of `layer` alone on inputs of `shapes`."""
    import tensorflow as tf

    inputs = [tf.random.uniform(s) for s in shapes]
    layer(inputs if len(inputs) > 1 else inputs[0])  # build

    @tf.function
    def step(*xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = layer(list(xs) if len(xs) > 1 else xs[0], training=True)
            loss = tf.add_n([tf.reduce_sum(t) for t in tf.nest.flatten(y)])
        return tape.gradient(loss, [*layer.trainable_variables, *xs])

    return step, inputs


def _seconds(step, inputs, budget: float = 0.1) -> float:
    """Best mean time per call over 3 rounds, each of as many calls as fit in `budget` seconds."""
    step(*inputs)
    start = time.perf_counter()
    step(*inputs)
    once = time.perf_counter() - start
    calls = max(2, min(50, int(budget / max(once, 1e-6))))
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            step(*inputs)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _clone(layer, **changes):
    return type(layer).from_config({**layer.get_config(), **changes})


def _kind(layer) -> str:
    name = type(layer).__name__
    if name not in CONVOLUTIONS:
        return name
    kh, kw = layer.kernel_size
    kind = f"{name.replace('2D', '')} {kh}x{kw}"
    if max(layer.dilation_rate) > 1:
        kind += f" d{max(layer.dilation_rate)}"
    if max(layer.strides) > 1:
        kind += f" s{max(layer.strides)}"
    return kind


def profile_model(name: str, size: int, batch: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from skinseg.losses import get_loss
    from skinseg.models.registry import CPU_SIZED, build_model
    from skinseg.training.trainer import SegmentationTrainer

    network = build_model(name, size, **CPU_SIZED[name])
    empty_step, empty_inputs = _step_for(keras.layers.Identity(), [(batch, 8, 8, 8)])
    overhead = _seconds(empty_step, empty_inputs)
    rows = []
    for layer, inputs in _leaf_layers(network):
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        shapes = [(batch, *t.shape[1:]) for t in inputs]
        step, tensors = _step_for(_clone(layer), shapes)
        seconds = max(_seconds(step, tensors) - overhead, 0.0)
        kind = _kind(layer)
        row = {"layer": layer.name, "kind": kind, "out_px": layer.output.shape[1], "seconds": seconds}
        if type(layer).__name__ in CONVOLUTIONS:
            row["flops"] = 3 * _conv_flops(layer, batch)
            if max(layer.dilation_rate) > 1:
                twin, twin_inputs = _step_for(_clone(layer, dilation_rate=(1, 1)), shapes)
                row["undilated_seconds"] = max(_seconds(twin, twin_inputs) - overhead, 0.0)
        rows.append(row)

    # The optimizer's update alone (Adam: every weight, its gradient and two moments read and
    # written each step): memory-bound, it grows with parameters, not FLOPs.
    variables = network.trainable_variables
    adam = keras.optimizers.Adam()
    adam.build(variables)
    zeros = [tf.zeros_like(v) for v in variables]
    update = tf.function(lambda: adam.apply(zeros, variables))
    optimizer_s = _seconds(lambda: update(), [])

    trainer = SegmentationTrainer(network)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3)).astype("float32")
    y = (rng.random((batch, size, size, 1)) > 0.5).astype("float32")
    whole = {}
    for jit in (False, True):
        trainer.compile(optimizer="adam", loss=get_loss("bce"), jit_compile=jit)
        for _ in range(2):
            trainer.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(4):
            trainer.train_on_batch(x, y)
        whole["xla" if jit else "plain"] = (time.perf_counter() - start) / 4
    return {
        "model": name,
        "size": size,
        "batch": batch,
        "params": network.count_params(),
        "overhead_s": overhead,
        "optimizer_s": optimizer_s,
        "layers": rows,
        "step": whole,
    }


def _groups(rows: list[dict], key) -> list[dict]:
    total_s = sum(r["seconds"] for r in rows) or 1.0
    total_f = sum(r.get("flops", 0.0) for r in rows) or 1.0
    groups: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "flops": 0.0, "layers": 0})
    for r in rows:
        g = groups[key(r)]
        g["seconds"] += r["seconds"]
        g["flops"] += r.get("flops", 0.0)
        g["layers"] += 1
    out = []
    for name, g in sorted(groups.items(), key=lambda item: -item[1]["seconds"]):
        out.append(
            {
                "group": name,
                "layers": g["layers"],
                "ms": 1e3 * g["seconds"],
                "time_share": g["seconds"] / total_s,
                "flop_share": g["flops"] / total_f,
                "GFLOPs": g["flops"] / g["seconds"] / 1e9 if g["flops"] and g["seconds"] else None,
            }
        )
    return out


def _markdown(result: dict, peak: float) -> str:
    rows = result["layers"]
    convs = [r for r in rows if "flops" in r]
    layer_sum = sum(r["seconds"] for r in rows)
    conv_s = sum(r["seconds"] for r in convs)
    flops = sum(r["flops"] for r in convs)
    step = result["step"]
    lines = [
        f"## {result['model']} at {result['size']} px, batch {result['batch']}",
        "",
        f"Whole step: {1e3 * step['plain']:.0f} ms ({flops / step['plain'] / peak:.0%} of the "
        f"{peak / 1e9:.0f} GFLOP/s matmul peak); with XLA {1e3 * step['xla']:.0f} ms. Sum of the layers "
        f"timed alone: {1e3 * layer_sum:.0f} ms, of which convolutions {1e3 * conv_s:.0f} ms "
        f"({conv_s / layer_sum:.0%}) at {flops / conv_s / 1e9:.0f} GFLOP/s "
        f"({flops / conv_s / peak:.0%} of peak). Dispatch overhead subtracted per layer: "
        f"{1e6 * result['overhead_s']:.0f} us. The optimizer's update alone ({result['params'] / 1e6:.1f} M "
        f"parameters): {1e3 * result['optimizer_s']:.0f} ms ({result['optimizer_s'] / step['plain']:.0%} "
        "of the step).",
        "",
    ]
    dilated = [r for r in convs if "undilated_seconds" in r]
    if dilated:
        d = sum(r["seconds"] for r in dilated)
        u = sum(r["undilated_seconds"] for r in dilated)
        lines += [
            f"Dilated convolutions: {len(dilated)} layers, {1e3 * d:.1f} ms; the same convolutions "
            f"undilated (equal FLOPs): {1e3 * u:.1f} ms (dilation costs {d / u:.2f}x).",
            "",
        ]

    def block(title, groups):
        cols = ["group", "layers", "ms", "time_share", "flop_share", "GFLOPs"]
        out = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for g in groups:
            out.append(
                "| "
                + " | ".join(
                    [
                        g["group"],
                        str(g["layers"]),
                        f"{g['ms']:.1f}",
                        f"{g['time_share']:.1%}",
                        f"{g['flop_share']:.1%}",
                        f"{g['GFLOPs']:.0f}" if g["GFLOPs"] else "—",
                    ]
                )
                + " |"
            )
        return out + [""]

    lines += block("By layer kind", _groups(rows, lambda r: r["kind"]))
    lines += block(
        "Convolutions by output size (px)",
        _groups(convs, lambda r: f"{r['out_px']} px"),
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default=os.path.join("bench", "out", "profile"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(profile_model(args.one, args.size, args.batch)))
        return
    from skinseg.models.registry import PRESETS

    peak = matmul_peak_flops()
    os.makedirs(args.out, exist_ok=True)
    summary, ratios = [], {}
    for name in args.models or PRESETS:
        cmd = [sys.executable, "-m", "bench.profile", "--one", name, "--size", str(args.size)]
        done = subprocess.run([*cmd, "--batch", str(args.batch)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  {name} failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        text = _markdown(result, peak)
        with open(os.path.join(args.out, f"{name}.md"), "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        rows = result["layers"]
        convs = [r for r in rows if "flops" in r]
        conv_s = sum(r["seconds"] for r in convs)
        flops = sum(r["flops"] for r in convs)
        top = _groups(rows, lambda r: r["kind"])[0]
        summary.append(
            {
                "model": name,
                "step_ms": 1e3 * result["step"]["plain"],
                "xla_ms": 1e3 * result["step"]["xla"],
                "of_peak": flops / result["step"]["plain"] / peak,
                "conv_time_share": conv_s / sum(r["seconds"] for r in rows),
                "conv_of_peak": flops / conv_s / peak,
                "optimizer_share": result["optimizer_s"] / result["step"]["plain"],
                "largest": f"{top['group']} ({top['time_share']:.0%})",
            }
        )
        ratios[f"{name}_conv_of_peak"] = flops / conv_s / peak
        print(f"  {name}: done", file=sys.stderr)
    finish(
        "profile",
        args,
        summary,
        [
            "model",
            "step_ms",
            "xla_ms",
            "of_peak",
            "conv_time_share",
            "conv_of_peak",
            "optimizer_share",
            "largest",
        ],
        ratios,
        notes=f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; per-layer tables in {args.out}/",
    )


if __name__ == "__main__":
    main()
