"""Named sets of options: `train.py --recipe best` gives a newcomer the project's best measured
CPU recipe in one flag. A recipe only changes defaults: options typed on the command line win,
and the run's config.json records the values used (and the recipe's name)."""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    # The best recipe measured at the CPU budget (BENCHMARKS.md, bench.ablation): a narrow UNet,
    # Dice+BCE, cosine schedule with a warm-up epoch, augmentation on the accelerator and
    # Shades-of-Gray colour constancy (which makes other clinics' colour casts matter less). Width
    # 16, not 32: over three seeds each, 16 scored 0.008 Dice higher (paired p 7e-5) in a quarter of
    # the training time; 15 epochs are too few for the wider network. The dermoscopy policy
    # (illumination, colour temperature, vignettes, hairs, gel bubbles on the images only) won over
    # three seeds on the reference's 720 images: reference test +0.008 [+0.002, +0.015], the 1,694
    # other ISIC 2018 images +0.012 [+0.008, +0.017], their 401-image hold-out +0.010 [+0.002,
    # +0.019] (BENCHMARKS.md, "Levers on the cross-source sets").
    "best": {
        "model": "baseline",
        "width": 16,
        "image_size": 128,
        "batch_size": 8,
        "loss": "bce_dice",
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "aug": True,
        "aug_policy": "dermoscopy",
        "color_constancy": True,
        "epochs": 15,
    },
    # The reference's protocol (CreamNuts/Skin-Leison-Segmentation-Homework: train.py, models/Unet.py,
    # metrics.py and every notebook's first cell): Adam at lr 1e-5 with PyTorch's epsilon 1e-8,
    # batch 32, 100 epochs, BCE on sigmoid outputs, no schedule, its weight initialisation,
    # predictions rounded at 0.5 without clean-up, the epoch of the lowest held-out loss (here the
    # validation split's: the reference selected on its test set). Rows that differ add their one
    # option: --model, --lr-schedule step (StepLR(30, 0.1)), --flooding 0.1, or --aug
    # --aug-policy reference.
    "reference": {
        "model": "baseline",
        "width": None,
        "depth": None,
        "max_filters": 0,  # auto: its widths when they fit the machine, else capped loudly
        "image_size": 128,
        "padding": "reflect",
        "init": "reference",
        "batch_size": 32,
        "epochs": 100,
        "lr": 1e-5,
        "optimizer": "adam",
        "epsilon": 1e-8,
        "loss": "bce",
        "lr_schedule": "none",
        "step_every": 30,
        "step_factor": 0.1,
        "warmup_epochs": 0,
        "aug": False,
        "elastic": 0.0,
        "ema": 0.0,
        "flooding": 0.0,
        "clahe": False,
        "color_constancy": False,
        "fit": "stretch",
        "monitor": "val_loss",
        "mask_step": "fixed",
        "mixed_precision": False,
    },
}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def recipe_options(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(recipe_names())}")
    return dict(RECIPES[name])
