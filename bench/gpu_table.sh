#!/usr/bin/env bash
# The reference's ten-row table on one GPU, under the reference's protocol (`--recipe reference`:
# Adam lr 1e-5 eps 1e-8, batch 32, 100 epochs, BCE, its initialisation, fp32, threshold 0.5, the
# lowest validation loss), then the same table with the project's best recipe (`--recipe best`), on the
# shared 128 px ISIC set (800 training images, validation carved from them; the 200 test images are
# used by evaluate.py only).
#
#   bash bench/gpu_table.sh [DATA] [RUNS_DIR]                 # every row, 100 epochs: hours, not minutes
#   ROWS="baseline deeper" EPOCHS=20 bash bench/gpu_table.sh  # a row list and an epoch override
#   TABLES=reference bash bench/gpu_table.sh                  # reference (fp32), best, or both (default)
#   PLAN=1 bash bench/gpu_table.sh                            # print each row's time and disk estimate only
#   SMOKE=1 bash bench/gpu_table.sh DATA /tmp/smoke           # every row and both tables on a CPU in
#                                                             # minutes: 1 epoch, width 4, same code paths
#
# Rows are the reference's networks at their widths: `--max-filters auto` keeps them uncapped when the
# run's estimated memory fits the GPU (an H200's 141 GB holds the 1.99 B-parameter bigger_deeper at
# batch 32) and caps them loudly otherwise. Their checkpoints are large: a .keras file is 4 bytes a
# parameter and the resume state 12 (weights and Adam's two slots), so checkpoints are written only at the
# end (--checkpoint-every EPOCHS) and best.keras whenever the validation loss improves; a finished row
# keeps only best.keras (bigger_deeper: 8 GB). The 15-minute device budget of a session holds a few rows
# at reduced epochs, not the table: pick them with ROWS/EPOCHS.
set -euo pipefail
DATA=${1:-../shared/data/isic_seed128}
RUNS=${2:-runs_gpu}
EPOCHS=${EPOCHS:-100}
TABLES=${TABLES:-reference best}
ALL_ROWS="baseline deeplabv3plus hardnet_mseg bigger deeper baseline-aug baseline-lrstep baseline-flood0.1 bigger_deeper-aug slightly_bigger_deeper-aug"
ROWS=${ROWS:-$ALL_ROWS}
SIZE=()
if [[ "${SMOKE:-0}" == 1 ]]; then EPOCHS=1; SIZE=(--width 4); fi
export NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2

# The row's own options, on top of the recipe. Widths are explicit: --recipe best narrows its UNet to 16
# filters, which would make every UNet row the same network.
options() {
  case $1 in
    baseline) echo "--model baseline --width 64" ;;
    deeplabv3plus) echo "--model deeplabv3plus --width 256 --backbone resnet101 --backbone-weights none" ;;
    hardnet_mseg) echo "--model hardnet_mseg --width 32" ;;
    bigger) echo "--model bigger --width 128" ;;
    deeper) echo "--model deeper --width 64" ;;
    baseline-aug) echo "--model baseline --width 64 --aug --aug-policy reference" ;;
    baseline-lrstep) echo "--model baseline --width 64 --lr-schedule step" ;;
    baseline-flood0.1) echo "--model baseline --width 64 --flooding 0.1" ;;
    bigger_deeper-aug) echo "--model bigger_deeper --width 128 --aug --aug-policy reference" ;;
    slightly_bigger_deeper-aug) echo "--model slightly_bigger_deeper --width 96 --aug --aug-policy reference" ;;
    *) echo "unknown row $1; rows: $ALL_ROWS" >&2; exit 2 ;;
  esac
}

# Parameters (reference widths) and estimated H200 images/s at 128 px in fp32 (the baseline measured
# 7.3 img/s on a 2-core CPU; GPU rates are estimates until a lent GPU measures them): the time and disk
# estimate printed before each row.
estimate() {
  local params rate
  case $1 in
    baseline* ) params=31055297; rate=1500 ;;
    deeplabv3plus) params=59510081; rate=600 ;;
    hardnet_mseg) params=17440225; rate=1200 ;;
    bigger) params=124156801; rate=500 ;;
    deeper) params=497766849; rate=900 ;;
    bigger_deeper-aug) params=1990812545; rate=250 ;;
    slightly_bigger_deeper-aug) params=1119879841; rate=400 ;;
  esac
  python3 - "$1" "$params" "$rate" "$EPOCHS" <<'EOF'
import sys
row, params, rate, epochs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
minutes = (720 + 80) * epochs / rate / 60 + 0.5
disk = params * 4 * (2 + 3) / 1e9  # best.keras + last.keras + resume state (weights, two Adam slots)
print(f"{row}: {params / 1e6:,.0f} M parameters; about {minutes:.0f} min for {epochs} epochs; about {disk:.1f} GB "
      "of checkpoints while it trains, best.keras alone after")
EOF
}

if [[ "${PLAN:-0}" == 1 ]]; then
  for name in $ROWS; do estimate "$name"; done
  exit 0
fi
mkdir -p "$RUNS"
: > "$RUNS/timings.txt"
# Does the input pipeline keep the GPU busy? (delivery vs consumption ratio, in a few seconds)
python -m bench.pipeline --json "$RUNS/pipeline.json" | tail -3 | tee -a "$RUNS/timings.txt"

for table in $TABLES; do
  case $table in
    reference) RECIPE=(--recipe reference) ;;  # fp32, as the reference
    best) RECIPE=(--recipe best) ;;
    *) echo "unknown table $table (reference, best)" >&2; exit 2 ;;
  esac
  folder="$RUNS/$table"
  mkdir -p "$folder"
  for name in $ROWS; do
    estimate "$name" | tee -a "$RUNS/timings.txt"
    start=$SECONDS
    # shellcheck disable=SC2046  # the row's options are words
    python train.py "${RECIPE[@]}" $(options "$name") --data "$DATA" --epochs "$EPOCHS" \
      --checkpoint-every "$EPOCHS" --verbose 2 --out "$folder/$name" --overwrite "${SIZE[@]}"
    echo "$table/$name: $((SECONDS - start)) s" | tee -a "$RUNS/timings.txt"
    # The table needs best.keras (and the records); the resume state and last.keras of a finished row
    # are the bulk of its disk (16 bytes a parameter): 64 GB would not hold the 6-level rows' otherwise.
    rm -rf "$folder/$name/resume" "$folder/$name/last.keras"
    df -h "$RUNS" | tail -1 | tee -a "$RUNS/timings.txt"
  done
  baseline=()
  [[ " $ROWS " == *" baseline "* ]] && baseline=(--baseline baseline)
  python evaluate.py --all --runs-dir "$folder" "${baseline[@]}"
done
echo "whole run: $SECONDS s" | tee -a "$RUNS/timings.txt"
