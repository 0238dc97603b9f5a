#!/usr/bin/env bash
# The reference's ten-row table at full size, on one GPU, with the shared 128 px ISIC set
# (800 training images, validation carved from them; the 200 test images used by evaluate.py only).
#
#   bash bench/gpu_table.sh [DATA] [RUNS_DIR]        # EPOCHS=40 by default; results in RUNS_DIR/results.md
#
# Sizing for one H200 (aimed at under 12 minutes in all; an estimate, not yet measured on one: about
# 2,000 img/s for the baseline and 500 img/s for bigger_deeper at 128 px in mixed precision, plus
# ~30 s of start-up per row): mixed precision, batch 16, EPOCHS epochs per row,
# last.keras/resume state only at the end (--checkpoint-every), best.keras whenever validation Dice improves.
# DeepLabV3+ uses ImageNet ResNet50 weights when RESNET50_WEIGHTS names the Keras no-top file (the machine
# has no network); otherwise it trains from scratch, and the row is named deeplabv3plus-scratch.
set -euo pipefail
DATA=${1:-../shared/data/isic_seed128}
RUNS=${2:-runs_gpu}
EPOCHS=${EPOCHS:-40}
BACKBONE=${RESNET50_WEIGHTS:-none}
COMMON=(--data "$DATA" --epochs "$EPOCHS" --batch-size 16 --mixed-precision --checkpoint-every "$EPOCHS" --verbose 2)
export NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2

row() {  # NAME then train.py options
  local name=$1; shift
  local start=$SECONDS
  python train.py "${COMMON[@]}" --out "$RUNS/$name" --overwrite "$@"
  echo "$name: $((SECONDS - start)) s" | tee -a "$RUNS/timings.txt"
}

mkdir -p "$RUNS"
: > "$RUNS/timings.txt"
row baseline                   --model baseline
row "deeplabv3plus-$([ "$BACKBONE" = none ] && echo scratch || echo imagenet)" \
                               --model deeplabv3plus --backbone-weights "$BACKBONE"
row hardnet_mseg               --model hardnet_mseg
row bigger                     --model bigger
row deeper                     --model deeper
row baseline-aug               --model baseline --aug
row baseline-lrstep            --model baseline --lr-schedule step
row baseline-flood0.1          --model baseline --flooding 0.1
row bigger_deeper-aug          --model bigger_deeper --aug
row slightly_bigger_deeper-aug --model slightly_bigger_deeper --aug
python evaluate.py --all --runs-dir "$RUNS" --baseline baseline
