import pytest

from bench.ablation import paired_effect


def test_the_effect_is_the_mean_paired_difference_with_its_direction():
    lever = {"a": 0.90, "b": 0.80, "c": 0.70, "d": 0.50}
    recipe = {"a": 0.80, "b": 0.80, "c": 0.60, "d": 0.60, "only_in_recipe": 0.1}
    text = paired_effect(lever, recipe)  # differences +0.1, 0, +0.1, -0.1 over the shared images
    mean, rest = text.split(" [")
    assert mean == "+0.0250"
    lo, hi = (float(x) for x in rest.split("]")[0].split(", "))
    assert -0.1 <= lo <= 0.025 <= hi <= 0.1
    assert text.endswith("50% better")


def test_no_difference_gives_a_zero_interval():
    same = {"a": 0.5, "b": 0.7}
    assert paired_effect(same, dict(same)) == "+0.0000 [+0.0000, +0.0000], 0% better"


@pytest.mark.parametrize("lever", [{"x": 1.0}, {}])
def test_no_shared_images_is_an_error(lever):
    with pytest.raises(ValueError, match="no images scored by both"):
        paired_effect(lever, {"y": 1.0})


def test_one_table_reports_the_test_split_the_cross_source_set_and_the_hold_out():
    """Two levers over two seeds, by hand: per-image Dice averaged over seeds, then paired with the
    recipe's; a lever that trained on the cross-source set has no cross-source column but keeps
    its hold-out one."""
    from bench.ablation import ablation_rows

    def run(test, cross, held, minutes=8.0):
        return {
            "dice_by_id": test,
            "dice": sum(test.values()) / len(test),
            "cross_by_id": cross,
            "cross": None if cross is None else sum(cross.values()) / len(cross),
            "held_by_id": held,
            "held": sum(held.values()) / len(held),
            "minutes": minutes,
        }

    recipe = [
        run({"t1": 0.8, "t2": 0.6}, {"c1": 0.5, "c2": 0.7, "h1": 0.4}, {"h1": 0.4}),
        run({"t1": 0.8, "t2": 0.8}, {"c1": 0.7, "c2": 0.7, "h1": 0.6}, {"h1": 0.6}),
    ]
    lever = [
        run({"t1": 0.9, "t2": 0.7}, {"c1": 0.6, "c2": 0.8, "h1": 0.6}, {"h1": 0.6}),
        run({"t1": 0.9, "t2": 0.9}, {"c1": 0.8, "c2": 0.8, "h1": 0.8}, {"h1": 0.8}),
    ]
    both = [run({"t1": 0.8, "t2": 0.7}, None, {"h1": 0.9})]
    rows = ablation_rows(
        {"recipe": {"runs": recipe}, "lever": {"runs": lever}, "both data sets": {"runs": both}},
        with_held_out=True,
    )
    assert [row["lever"] for row in rows] == ["recipe", "lever", "both data sets"]
    recipe_row, lever_row, both_row = rows
    assert recipe_row["dice"] == "0.7500 ± 0.0707"  # run means 0.70 and 0.80
    assert recipe_row["cross_source_dice"] == "0.6000 ± 0.0943"  # run means 0.5333 and 0.6667
    assert recipe_row["held_out_dice"] == "0.5000 ± 0.1414"
    assert recipe_row["held_out_effect"] == "—" and recipe_row["train_min"] == "8.0"
    assert lever_row["effect_vs_recipe"].startswith("+0.1000 [+0.1000, +0.1000], 100% better")
    assert lever_row["cross_effect"].startswith("+0.1333 [")  # +0.1, +0.1, +0.2 over c1, c2, h1
    assert lever_row["held_out_effect"].startswith("+0.2000 [+0.2000, +0.2000], 100% better")
    assert both_row["cross_source_dice"] == "—" and both_row["cross_effect"] == "—"
    assert both_row["held_out_dice"] == "0.9000"
    assert both_row["held_out_effect"].startswith("+0.4000 [")
    assert "held_out_dice" not in ablation_rows({"recipe": {"runs": recipe}}, with_held_out=False)[0]


def test_a_finished_run_is_reused_only_if_the_command_would_train_it_again(tmp_path):
    """A folder trained before the recipe changed (here: before the dermoscopy policy joined it)
    must not be scored as today's recipe."""
    from bench.ablation import _refuse_stale
    from skinseg.cli import train as train_cli
    from skinseg.core.run_folder import RunFolder
    from skinseg.training.config import config_from_args

    out = tmp_path / "recipe-s0"
    out.mkdir()
    argv = ["--recipe", "best", "--seed", "0", "--epochs", "15", "--width", "16", "--out", str(out)]
    before = [*argv, "--aug-policy", "default"]  # what --recipe best meant until 2026-12-07
    given = set(vars(train_cli.build_parser(True).parse_args(before)))
    config_from_args(train_cli.build_parser().parse_args(before), given).save(str(out / "config.json"))
    with pytest.raises(
        SystemExit,
        match=r"recipe-s0 was trained with other options.*aug_policy 'default' \(now 'dermoscopy'\)",
    ):
        _refuse_stale(RunFolder(str(out)), argv)
    _refuse_stale(RunFolder(str(out)), before)  # the same command: reused
    _refuse_stale(RunFolder(str(out)), [*before, "--verbose", "2"])  # how much it prints is not training
    longer = [*before[:5], "30", *before[6:]]  # --epochs 30: a 15-epoch run is not one
    with pytest.raises(SystemExit, match=r"epochs 15 \(now 30\)"):
        _refuse_stale(RunFolder(str(out)), longer)
    (out / "config.json").write_text('{"no_such_option": 1}')
    with pytest.raises(SystemExit, match=r"config.json.*move .*recipe-s0 away"):
        _refuse_stale(RunFolder(str(out)), before)
