"""The mask step of a run chosen on its validation split with its best network (plain
predictions, no TTA, at the resolution the network was trained at): RUN/postprocess.json."""

from __future__ import annotations

import logging

from skinseg.core.run_folder import RunFolder, file_digest
from skinseg.data_pipeline.split import read_split
from skinseg.inference.postprocess import PostProcessing, choose, write_chosen
from skinseg.inference.segmenter import Segmenter

log = logging.getLogger("skinseg")


def choose_for_run(
    run: RunFolder,
    segmenter: Segmenter | None = None,
    batch_size: int = 16,
    digest: str | None = None,
    fixed: bool = False,
) -> PostProcessing:
    """`segmenter`: the run's, already loaded from best.keras, whose digest (taken before loading
    it) is `digest`; by default both are taken here. `fixed` (a run trained with --mask-step
    fixed): threshold 0.5 without clean-up, recorded as such, nothing chosen."""
    if fixed:
        chosen = PostProcessing(chosen_on={"fixed": "threshold 0.5, no clean-up (--mask-step fixed)"})
        write_chosen(run, chosen, digest)
        return chosen
    if segmenter is None:
        digest = file_digest(run.best_network)
        segmenter = Segmenter.from_run(run.path, post=PostProcessing())
    plain = segmenter.with_options(tta=False, post=PostProcessing())
    pairs = read_split(run.split_path)["validation"]
    probabilities, truths = [], []
    for _pair, prediction, _truth, at_input in plain.stream_pairs(
        pairs, batch_size=batch_size, keep_original=False
    ):
        probabilities.append(prediction.at_input)
        truths.append(at_input > 0)
    chosen = choose(probabilities, truths)
    write_chosen(run, chosen, digest)
    log.info(
        "post-processing chosen on %d validation images: %s (validation Dice %s, at 0.5 %s)",
        len(pairs),
        chosen.describe(),
        chosen.chosen_on.get("dice_chosen"),
        chosen.chosen_on.get("dice_default"),
    )
    return chosen
