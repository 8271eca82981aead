#!/usr/bin/env bash
# main_grid.sh: the main grid of docs/results.md's pre-registered plan.
# At setting S1 (S1_RANK, learning rates around S1_LR0) and S2 (S2_RANK):
#   1. AdamW at lr0/3, lr0, 3 lr0; lr* = lowest mean final VALIDATION loss;
#   2. MGPO look-ahead at rho 0.05, 0.2, 0.5 and ascent (Eq. 3) at 0.01,
#      0.05, 0.2, all at lr*; rho* and rho*_a chosen on validation the same way;
#   3. the random direction and APN off at rho*, the paper profiles
#      nlu-paper and nlg-paper (clipping 1.0) at lr*;
#   S2: AdamW, look-ahead rho* and ascent 0.05 at S1's lr* (no re-tuning).
# Every run also reports the TEST loss of its final weights (--test-windows);
# analyse.py compares the chosen arms on it (paired, 95 % CI, Holm).
# Resumable: a run whose log already has its summary line is not re-run.
# Outputs in OUT: runs/, choices.txt, runtime.txt, runs.csv, points.txt,
# rebounds.md (noise floor from the AdamW runs; rebound and transient
# divergences per run and per arm), analysis.md, and with gnuplot the
# figures of grid_figures.sh.
#
#   LOCK=<bench.lock> S1_RANK=128 S1_LR0=0.01 examples/gpt_lora/main_grid.sh
#
# Settings [defaults]: GPT_LORA [build/examples/gpt_lora/gpt_lora], OUT
# [build/main-grid], MODEL_CACHE [build/gpt_256.model], MODEL, PRETRAIN,
# STEPS, EVAL_EVERY, EVAL_WINDOWS as pilot.sh; TEST_WINDOWS [128]; S1_RANK
# [128], S1_LR0 [0.01], S2_RANK [4], SEEDS [1 2 3 4 5 6], EXPLORE (arms
# run at S1_LR0 outside the plan, e.g. "look-rho0.2") [none], THREADS [1], JOBS
# [1] (runs at a time: each run's results do not depend on it, its step_ms
# does), LOCK, COMMIT.
set -euo pipefail
GPT_LORA=${GPT_LORA:-build/examples/gpt_lora/gpt_lora}
OUT=${OUT:-build/main-grid}
MODEL_CACHE=${MODEL_CACHE:-build/gpt_256.model}
MODEL=${MODEL:---layers 2 --dim 256 --heads 4 --seq 64 --batch 8}
PRETRAIN=${PRETRAIN:-1000}
STEPS=${STEPS:-400}
EVAL_EVERY=${EVAL_EVERY:-20}
EVAL_WINDOWS=${EVAL_WINDOWS:-64}
TEST_WINDOWS=${TEST_WINDOWS:-128}
S1_RANK=${S1_RANK:-128}
S1_LR0=${S1_LR0:-0.01}
S2_RANK=${S2_RANK:-4}
SEEDS=${SEEDS:-1 2 3 4 5 6}
THREADS=${THREADS:-1}
JOBS=${JOBS:-1}
EXPLORE=${EXPLORE:-}
LOCK=${LOCK:-}
COMMIT=${COMMIT:-$(git -C "$(dirname "$0")" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)}
COMMON="--commit $COMMIT --model-cache $MODEL_CACHE --pretrain-steps $PRETRAIN $MODEL --steps $STEPS
        --eval-every $EVAL_EVERY --eval-windows $EVAL_WINDOWS --eval-split validation
        --test-windows $TEST_WINDOWS --clip 1 --schedule cosine --lora-mode tensors"
mkdir -p "$OUT/runs"

# shellcheck source=arms.sh
. "$(dirname "$0")/arms.sh"

run_one() { # name rank lr seed arm: one run, its log and CSV under $OUT/runs
    local name=$1 rank=$2 lr=$3 seed=$4 arm=$5 t0
    t0=$(date +%s)
    local cmd=(env OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS")
    [ -n "$LOCK" ] && cmd+=(nice -n 5 flock -s "$LOCK")
    # shellcheck disable=SC2046,SC2086
    "${cmd[@]}" "$GPT_LORA" $COMMON --rank "$rank" --lr "$lr" --seed "$seed" $(flags_of "$arm" || echo --unknown-arm) --quiet \
        --csv "$OUT/runs/$name.csv" > "$OUT/runs/$name.log" 2>&1 || { echo "main_grid.sh: $name failed" >&2; return 1; }
    echo "main_grid.sh: $name $(( $(date +%s) - t0 )) s" >&2
}

run() { # setting rank lr arm: every seed, JOBS at a time, skipping finished runs
    local setting=$1 rank=$2 lr=$3 arm=$4 seed name
    for seed in $SEEDS; do
        name="${setting}_r${rank}_lr${lr}_${arm}_s${seed}"
        grep -q '^final ' "$OUT/runs/$name.log" 2> /dev/null && continue
        # Until one run has finished, one at a time: the first pretrains and
        # writes the model cache that the others then load.
        while [ "$(jobs -pr | wc -l)" -ge "$JOBS" ] ||
              { [ -n "$(jobs -pr)" ] && ! grep -qs '^final ' "$OUT"/runs/*.log; }; do
            wait -n || true
        done
        run_one "$name" "$rank" "$lr" "$seed" "$arm" &
    done
    wait
    for seed in $SEEDS; do # a failed run has no summary line, however it was reaped
        name="${setting}_r${rank}_lr${lr}_${arm}_s${seed}"
        grep -q '^final ' "$OUT/runs/$name.log" || { echo "main_grid.sh: $name has no summary" >&2; exit 1; }
    done
}

best() { # setting rank, then "lr arm" candidates: prints the candidate with the lowest mean final validation loss
    local setting=$1 rank=$2 cand lr arm; shift 2
    for cand in "$@"; do
        read -r lr arm <<< "$cand"
        awk -v c="$cand" '/^final / { for (i = 2; i < NF; i += 2) if ($i == "eval_loss") { s += $(i + 1); n++ } }
                          END { if (n) printf "%.6f %s\n", s / n, c }' "$OUT"/runs/"${setting}_r${rank}_lr${lr}_${arm}"_s*.log
    done | sort -g | head -1 | cut -d' ' -f2-
}

start=$(date +%s)
run_setting_s1() {
    local lrs lr arm choice rho rho_a cands=()
    lrs=$(awk -v l="$S1_LR0" 'BEGIN { printf "%g %g %g", l / 3, l, 3 * l }')
    for lr in $lrs; do run S1 "$S1_RANK" "$lr" adamw; cands+=("$lr adamw"); done
    choice=$(best S1 "$S1_RANK" "${cands[@]}")
    LR_STAR=${choice%% *}
    echo "main_grid.sh: S1 lr* = $LR_STAR (validation)" | tee -a "$OUT/choices.txt" >&2
    for rho in 0.05 0.2 0.5; do run S1 "$S1_RANK" "$LR_STAR" "look-rho$rho"; done
    for rho in 0.01 0.05 0.2; do run S1 "$S1_RANK" "$LR_STAR" "asc-rho$rho"; done
    choice=$(best S1 "$S1_RANK" "$LR_STAR look-rho0.05" "$LR_STAR look-rho0.2" "$LR_STAR look-rho0.5")
    RHO_STAR=${choice##*look-rho}
    choice=$(best S1 "$S1_RANK" "$LR_STAR asc-rho0.01" "$LR_STAR asc-rho0.05" "$LR_STAR asc-rho0.2")
    rho_a=${choice##*asc-rho}
    echo "main_grid.sh: S1 rho* = $RHO_STAR (look-ahead), rho*_a = $rho_a (ascent)" | tee -a "$OUT/choices.txt" >&2
    for arm in "random-rho$RHO_STAR" "apnoff-rho$RHO_STAR" nlu nlg; do run S1 "$S1_RANK" "$LR_STAR" "$arm"; done
}
: > "$OUT/choices.txt"
run_setting_s1
for arm in adamw "look-rho$RHO_STAR" asc-rho0.05; do run S2 "$S2_RANK" "$LR_STAR" "$arm"; done
# Exploratory, outside the plan (analyse.py reports them apart, uncorrected):
# EXPLORE arms at S1's rank and the pilot's lr0, where AdamW rebounded,
# against the AdamW tuning runs at that lr.
for arm in $EXPLORE; do run S1 "$S1_RANK" "$S1_LR0" "$arm"; done
echo "main_grid.sh: runs took $(( $(date +%s) - start )) s (load: $(uptime | sed 's/.*load average: //'))" |
    tee -a "$OUT/runtime.txt" >&2
# Every run's summary (with its libmgpo version and commit) and its
# evaluated points; the noise floor from the grid's AdamW runs and every
# run's rebound (rebounds.awk); the paired analysis; the figures.
{
    echo "setting,rank,lr,arm,seed,final_test,final_train,final_validation,best_validation,max_rebound,step_ms,optimizer_bytes,mgpo_version,commit"
    for log in "$OUT"/runs/*.log; do
        awk -v base="$(basename "$log" .log)" '/^final / {
            n = split(base, f, "_"); for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
            printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", f[1], substr(f[2], 2), substr(f[3], 3), f[4],
                   substr(f[5], 2), v["test_loss"], v["train_loss"], v["eval_loss"], v["best_eval_loss"],
                   v["max_rebound"], v["step_ms"], v["optimizer_bytes"], v["mgpo_version"], v["commit"] }' "$log"
    done
} > "$OUT/runs.csv"
for csv in "$OUT"/runs/*.csv; do
    awk -F, -v run="$(basename "$csv" .csv)" 'NR > 1 && $4 != "" { print run, $1, $4, $5 }' "$csv"
done > "$OUT/points.txt"
awk -v steps="$STEPS" -v floor_runs=_adamw_ -f "$(dirname "$0")/rebounds.awk" "$OUT/points.txt" > "$OUT/rebounds.md"
python3 "$(dirname "$0")/analyse.py" "$OUT" > "$OUT/analysis.md"
"$(dirname "$0")/grid_figures.sh" "$OUT"
cat "$OUT/analysis.md"
sed -n '/^| setting | runs |/,$p' "$OUT/rebounds.md"
