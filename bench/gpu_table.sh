#!/usr/bin/env bash
# The reference's ten-row table at full size, on one GPU, with the shared 128 px ISIC set
# (800 training images, validation carved from them; the 200 test images used by evaluate.py only).
#
#   bash bench/gpu_table.sh [DATA] [RUNS_DIR]        # EPOCHS=40 by default; results in RUNS_DIR/results.md
#   SMOKE=1 bash bench/gpu_table.sh DATA /tmp/smoke  # every row and the table in minutes, on a CPU:
#                                                    # 1 epoch, width 4 (same code paths)
#
# Sizing for one H200 (aimed at under 12 minutes in all; an estimate, not yet measured on one: about
# 2,000 img/s for the baseline and 500 img/s for bigger_deeper at 128 px in mixed precision, plus
# ~30 s of start-up per row): mixed precision, batch 16, EPOCHS epochs per row,
# last.keras/resume state only at the end (--checkpoint-every), best.keras whenever validation Dice improves.
# Rows run the reference's networks: DeepLabV3+ on a full ResNet-101 (output stride 16) from scratch, and
# the UNets at the reference's widths (--max-filters none) where a checkpoint stays small enough to write
# every time validation improves: bigger (124 M parameters) and deeper (498 M). The two 6-level rows
# uncapped hold 1.12 and 1.99 billion parameters (4.5 and 8 GB per .keras file, three times that for the
# resume state), beyond the device's 64 GB disk over a run, so they run capped at 1024 channels and their
# rows say so ("-capped1024").
set -euo pipefail
DATA=${1:-../shared/data/isic_seed128}
RUNS=${2:-runs_gpu}
EPOCHS=${EPOCHS:-40}
SIZE=()
if [[ "${SMOKE:-0}" == 1 ]]; then EPOCHS=1; SIZE=(--width 4); fi
COMMON=(--data "$DATA" --epochs "$EPOCHS" --batch-size 16 --mixed-precision --checkpoint-every "$EPOCHS" --verbose 2)
export NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2

row() {  # NAME then train.py options
  local name=$1; shift
  local start=$SECONDS
  python train.py "${COMMON[@]}" --out "$RUNS/$name" --overwrite "$@" "${SIZE[@]}"
  echo "$name: $((SECONDS - start)) s" | tee -a "$RUNS/timings.txt"
}

mkdir -p "$RUNS"
: > "$RUNS/timings.txt"
# Does the input pipeline keep the GPU busy? (delivery vs consumption ratio, in a few seconds)
python -m bench.pipeline --json "$RUNS/pipeline.json" | tail -3 | tee -a "$RUNS/timings.txt"
row baseline                              --model baseline
row deeplabv3plus-resnet101               --model deeplabv3plus --backbone resnet101 --backbone-weights none
row hardnet_mseg                          --model hardnet_mseg
row bigger                                --model bigger --max-filters none
row deeper                                --model deeper --max-filters none
row baseline-aug                          --model baseline --aug
row baseline-lrstep                       --model baseline --lr-schedule step
row baseline-flood0.1                     --model baseline --flooding 0.1
row bigger_deeper-capped1024-aug          --model bigger_deeper --max-filters 1024 --aug
row slightly_bigger_deeper-capped1024-aug --model slightly_bigger_deeper --max-filters 1024 --aug
python evaluate.py --all --runs-dir "$RUNS" --baseline baseline
echo "whole table: $SECONDS s" | tee -a "$RUNS/timings.txt"
