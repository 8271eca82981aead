#!/usr/bin/env bash
# cost.sh: the paper's Table 3 at the main grid's model: milliseconds per
# fine-tuning step (perturb + forward + backward + restore + step, as
# gpt_lora's step_ms) and the optimizer's own heap bytes of each arm, against
# AdamW.  One run at a time; ROUNDS rounds each go through every arm in turn
# (so a slow minute hits every arm alike); the median per arm.  Hold the
# exclusive benchmark lock around it, on an otherwise idle machine:
#
#   flock <bench.lock> examples/gpt_lora/cost.sh > cost.md
#
# Settings [defaults]: GPT_LORA [build/examples/gpt_lora/gpt_lora],
# MODEL_CACHE [build/gpt_256.model], MODEL and PRETRAIN as main_grid.sh,
# RANKS [128 4], LR [0.01], ARMS [adamw look-rho0.05 asc-rho0.05
# random-rho0.05 apnoff-rho0.05], STEPS [60], ROUNDS [3], THREADS [1], COMMIT
# [git describe] (must match the cache's, or the first run pretrains).
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=arms.sh
. "$here/arms.sh"
GPT_LORA=${GPT_LORA:-build/examples/gpt_lora/gpt_lora}
MODEL_CACHE=${MODEL_CACHE:-build/gpt_256.model}
MODEL=${MODEL:---layers 2 --dim 256 --heads 4 --seq 64 --batch 8}
PRETRAIN=${PRETRAIN:-1000}
RANKS=${RANKS:-128 4}
LR=${LR:-0.01}
ARMS=${ARMS:-adamw look-rho0.05 asc-rho0.05 random-rho0.05 apnoff-rho0.05}
STEPS=${STEPS:-60}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
COMMIT=${COMMIT:-$(git -C "$here" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$ROUNDS"); do
    for rank in $RANKS; do for arm in $ARMS; do
        # One evaluation at the end only: step_ms counts training steps alone.
        # shellcheck disable=SC2046,SC2086
        OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS "$GPT_LORA" \
            --commit "$COMMIT" --model-cache "$MODEL_CACHE" --pretrain-steps "$PRETRAIN" $MODEL \
            --steps "$STEPS" --eval-every "$STEPS" --eval-windows 8 --clip 1 --schedule cosine \
            --lora-mode tensors --rank "$rank" --lr "$LR" --seed 1 $(flags_of "$arm" || echo --unknown-arm) --quiet |
            awk -v r="$rank" -v a="$arm" '/^final / { for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
                                                        print r, a, v["step_ms"], v["optimizer_bytes"], v["mgpo_version"], v["commit"] }' \
            >> "$work/points.txt"
    done; done
done
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $THREADS thread(s); $STEPS steps per run, median of $ROUNDS rounds; libmgpo $(awk 'NR == 1 { print $5 ", commit " $6 }' "$work/points.txt")"
echo
echo "| rank | arm | ms/step (median) | all rounds | vs AdamW | optimizer bytes | vs AdamW |"
echo "| ---: | :--- | ---: | :--- | ---: | ---: | ---: |"
for rank in $RANKS; do for arm in $ARMS; do
    awk -v r="$rank" -v a="$arm" '$1 == r && $2 == a { print $3, $4 }' "$work/points.txt" | sort -g |
        awk -v r="$rank" -v a="$arm" '{ ms[NR] = $1; by = $2; all = all (NR > 1 ? " " : "") $1 }
            END { m = NR % 2 ? ms[(NR + 1) / 2] : (ms[NR / 2] + ms[NR / 2 + 1]) / 2; print r, a, m, by, all }'
done; done | awk '{ if ($2 == "adamw") { m0 = $3; b0 = $4 }
                    all = $5; for (i = 6; i <= NF; i++) all = all " " $i
                    printf "| %s | %s | %.1f | %s | %+.1f %% | %d | %+d |\n", $1, $2, $3, all, 100 * ($3 / m0 - 1), $4, $4 - b0 }'
