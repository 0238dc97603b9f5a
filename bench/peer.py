"""Keras against a peer: the same baseline UNet written in plain PyTorch (conv3x3 with bias and
reflection padding, BN, ReLU twice per level; max-pool, 2x2 transposed conv, skip concatenation,
1x1 conv + sigmoid: the reference's network), same width,
depth, batch, image size, optimiser (Adam 1e-3) and loss (BCE), trained for the same number of
steps on the same data. Images/s for training (at --batch) and for inference at batch 1 and 8
(Keras through the project's traced `Forward`, with and without XLA; PyTorch in eval mode under
no_grad), and the Keras/PyTorch ratios. PyTorch is optional (`pip install torch`, CPU build);
without it this bench says so and stops.
  python -m bench.peer [--full] [--width 32] [--steps 10] [--infer-batches 1 8]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench.data import bench_pairs
from bench.report import finish, parser


def torch_unet(width: int, depth: int):
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"),
            nn.BatchNorm2d(cout, momentum=0.1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, padding_mode="reflect"),
            nn.BatchNorm2d(cout, momentum=0.1),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            f = [width * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList([block(3 if i == 0 else f[i - 1], f[i]) for i in range(depth)])
            self.bottleneck = block(f[depth - 1], f[depth])
            self.up = nn.ModuleList(
                [nn.ConvTranspose2d(f[i + 1], f[i], 2, stride=2) for i in reversed(range(depth))]
            )
            self.dec = nn.ModuleList([block(2 * f[i], f[i]) for i in reversed(range(depth))])
            self.head = nn.Conv2d(f[0], 1, 1)

        def forward(self, x):
            skips = []
            for down in self.down:
                x = down(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottleneck(x)
            for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
                x = dec(torch.cat([up(x), skip], 1))
            return torch.sigmoid(self.head(x))

    return UNet()


def load_batches(size, batch, count):
    from skinseg.data_pipeline.tfdata import make_dataset

    _, pairs = bench_pairs("train")
    ds = make_dataset(pairs, size, batch, training=True, seed=0, cache="memory")
    return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]


def run_torch(batches, width, depth, steps):
    import torch

    torch.manual_seed(0)
    model = torch_unet(width, depth)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.BCELoss()
    data = [
        (
            torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(y).permute(0, 3, 1, 2).contiguous(),
        )
        for x, y in batches
    ]
    model.train()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    step(*data[0])  # warm-up
    start = time.perf_counter()
    for k in range(steps):
        step(*data[k % len(data)])
    train = steps * len(batches[0][0]) / (time.perf_counter() - start)
    model.eval()
    return params, train, model


def torch_infer(model, images: np.ndarray, steps: int) -> float:
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x).numpy()
        return steps * len(images) / (time.perf_counter() - start)


def keras_infer(network, images: np.ndarray, steps: int, jit_compile: bool, fold: bool) -> float:
    from skinseg.inference.network import Forward

    forward = Forward(network, jit_compile=jit_compile, fold=fold)
    forward(images)
    forward(images)
    start = time.perf_counter()
    for _ in range(steps):
        forward(images)
    return steps * len(images) / (time.perf_counter() - start)


def run_keras(batches, width, depth, steps, size):
    from skinseg.losses import get_loss
    from skinseg.models.registry import build_model
    from skinseg.training.trainer import SegmentationTrainer

    network = build_model("baseline", size, width=width, depth=depth, max_filters=None)
    trainer = SegmentationTrainer(network)
    trainer.compile(optimizer="adam", loss=get_loss("bce"))
    trainer.train_on_batch(*batches[0])
    trainer.train_on_batch(*batches[1 % len(batches)])  # warm-up, as for PyTorch (after tracing)
    start = time.perf_counter()
    for k in range(steps):
        trainer.train_on_batch(*batches[k % len(batches)])
    train = steps * len(batches[0][0]) / (time.perf_counter() - start)
    return sum(int(np.prod(w.shape)) for w in network.trainable_weights), train, network


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--width", type=int, default=None, help="default 32; --full: 64")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="default 10; --full: 30")
    p.add_argument("--infer-batches", type=int, nargs="+", default=[1, 8])
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench.peer: PyTorch is not installed (pip install torch, CPU build); skipped")
        print("RATIOS skipped=1")
        sys.exit(0)
    width = args.width or (64 if args.full else 32)
    steps = args.steps or (30 if args.full else 10)
    batches = load_batches(args.size, args.batch, 8)
    k_params, k_train, network = run_keras(batches, width, args.depth, steps, args.size)
    t_params, t_train, t_model = run_torch(batches, width, args.depth, steps)
    rows = [
        {"framework": "keras (this project)", "task": f"train b{args.batch}", "img_per_s": k_train},
        {"framework": f"pytorch {torch.__version__}", "task": f"train b{args.batch}", "img_per_s": t_train},
    ]
    ratios = {"train_keras_over_torch": k_train / t_train}
    pool = np.concatenate([x for x, _ in batches])
    for batch in args.infer_batches:
        images = np.ascontiguousarray(pool[:batch])
        n = max(steps, 40 // batch)
        measured = {
            "keras, plain graph": keras_infer(network, images, n, False, fold=False),
            "keras + XLA": keras_infer(network, images, n, True, fold=False),
            "keras (this project: BN folded)": keras_infer(network, images, n, False, fold=True),
            "keras, BN folded + XLA": keras_infer(network, images, n, True, fold=True),
            f"pytorch {torch.__version__}": torch_infer(t_model, images, n),
        }
        for name, rate in measured.items():
            rows.append({"framework": name, "task": f"infer b{batch}", "img_per_s": rate})
        torch_rate = measured[f"pytorch {torch.__version__}"]
        ratios[f"infer_b{batch}_keras_over_torch"] = measured["keras (this project: BN folded)"] / torch_rate
        ratios[f"infer_b{batch}_keras_unfolded_over_torch"] = measured["keras, plain graph"] / torch_rate
        ratios[f"infer_b{batch}_keras_xla_over_torch"] = measured["keras + XLA"] / torch_rate
        ratios[f"infer_b{batch}_keras_folded_xla_over_torch"] = (
            measured["keras, BN folded + XLA"] / torch_rate
        )
    finish(
        "peer",
        args,
        rows,
        ["framework", "task", "img_per_s"],
        ratios,
        notes=f"UNet width {width}, depth {args.depth}, {args.size} px, train batch {args.batch}, "
        f"{steps} timed steps, {torch.get_num_threads()} torch threads; {k_params:,} trainable "
        f"parameters in Keras, {t_params:,} in PyTorch",
    )


if __name__ == "__main__":
    main()
