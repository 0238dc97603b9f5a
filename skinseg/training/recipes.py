"""Named sets of options: `train.py --recipe best` gives a newcomer the project's best measured
CPU recipe in one flag. A recipe only changes defaults: options typed on the command line win,
and the run's config.json records the values used (and the recipe's name)."""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    # The best recipe measured at the CPU budget (BENCHMARKS.md, bench.ablation): a narrow UNet,
    # Dice+BCE, cosine schedule with a warm-up epoch, augmentation on the accelerator and
    # Shades-of-Gray colour constancy (which makes other clinics' colour casts matter less). Width
    # 16, not 32: over three seeds each, 16 scored 0.008 Dice higher (paired p 7e-5) in a quarter of
    # the training time; 15 epochs are too few for the wider network.
    "best": {
        "model": "baseline",
        "width": 16,
        "image_size": 128,
        "batch_size": 8,
        "loss": "bce_dice",
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "aug": True,
        "color_constancy": True,
        "epochs": 15,
    },
    # The reference's own settings (its table's baseline row): what `--recipe reference` restores
    # when other defaults change.
    "reference": {
        "model": "baseline",
        "width": None,
        "image_size": 128,
        "batch_size": 16,
        "loss": "bce",
        "lr_schedule": "none",
        "aug": False,
        "color_constancy": False,
        "epochs": 50,
    },
}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def recipe_options(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(recipe_names())}")
    return dict(RECIPES[name])
