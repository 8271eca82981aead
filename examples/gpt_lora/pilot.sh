#!/usr/bin/env bash
# pilot.sh: the pre-registered pilot of docs/results.md ("Plan"): plain AdamW
# (clipping 1.0, the paper's warm-up + cosine schedule) on a rank x lr grid,
# held-out = the validation split, looking for the paper's transient
# divergence of the training loss above a measured noise floor.
# One run at a time (JOBS is not a setting here: timing and load matter).
#
#   cmake -S . -B build && cmake --build build -j2 --target gpt_lora
#   LOCK=/path/to/bench.lock examples/gpt_lora/pilot.sh      # writes build/pilot/
#
# Settings from the environment [defaults]:
#   GPT_LORA     the program                 [build/examples/gpt_lora/gpt_lora]
#   OUT          output directory            [build/pilot]
#   MODEL_CACHE  pretrained model cache      [build/gpt_256.model]
#   MODEL        model flags                 [--layers 2 --dim 256 --heads 4 --seq 64 --batch 8]
#   PRETRAIN     pretraining steps           [1000]
#   RANKS        LoRA ranks (alpha = rank)   [4 32 128]
#   LRS          peak learning rates         [0.002 0.01 0.03]
#   SEEDS        seeds                       [1 2]
#   STEPS        fine-tuning steps per run   [400]
#   EVAL_EVERY   evaluation interval         [20]
#   EVAL_WINDOWS windows per evaluation      [64]
#   THREADS      OMP/OpenBLAS threads        [1]
#   LOCK         if set: every run holds a shared flock on this file, at nice 5
#   COMMIT       recorded commit             [git describe --always --dirty]
#   SKIP_RUNS    1: only analyse and plot what OUT holds
# Outputs: OUT/runs/*.{csv,log}, OUT/runs.csv, OUT/rebounds.md (noise floor,
# rebound per run and per setting), OUT/runtime.txt, and with gnuplot
# OUT/pilot_train.png, OUT/pilot_heldout.png (per seed thin, mean thick).
set -euo pipefail

GPT_LORA=${GPT_LORA:-build/examples/gpt_lora/gpt_lora}
OUT=${OUT:-build/pilot}
MODEL_CACHE=${MODEL_CACHE:-build/gpt_256.model}
MODEL=${MODEL:---layers 2 --dim 256 --heads 4 --seq 64 --batch 8}
PRETRAIN=${PRETRAIN:-1000}
RANKS=${RANKS:-4 32 128}
LRS=${LRS:-0.002 0.01 0.03}
SEEDS=${SEEDS:-1 2}
STEPS=${STEPS:-400}
EVAL_EVERY=${EVAL_EVERY:-20}
EVAL_WINDOWS=${EVAL_WINDOWS:-64}
THREADS=${THREADS:-1}
LOCK=${LOCK:-}
SKIP_RUNS=${SKIP_RUNS:-0}
COMMIT=${COMMIT:-$(git -C "$(dirname "$0")" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)}
COMMON="--commit $COMMIT --model-cache $MODEL_CACHE --pretrain-steps $PRETRAIN $MODEL --steps $STEPS
        --eval-every $EVAL_EVERY --eval-windows $EVAL_WINDOWS --eval-split validation --optimizer adamw
        --clip 1 --schedule cosine --lora-mode tensors"

# OMP_WAIT_POLICY=PASSIVE: waiting threads sleep instead of spinning, so a
# second thread cannot collapse a loaded machine (docs/results.md, threads).
run() { # the gpt_lora command line, under the shared lock when LOCK is set
    if [ -n "$LOCK" ]; then
        OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS \
            nice -n 5 flock -s "$LOCK" "$GPT_LORA" "$@"
    else
        OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS "$GPT_LORA" "$@"
    fi
}

mkdir -p "$OUT/runs"
if [ "$SKIP_RUNS" != 1 ]; then
    if [ ! -x "$GPT_LORA" ]; then echo "pilot.sh: $GPT_LORA not found" >&2; exit 1; fi
    case $COMMIT in *-dirty) echo "pilot.sh: warning: uncommitted changes ($COMMIT)" >&2 ;; esac
    rm -f "$OUT"/runs/*.csv "$OUT"/runs/*.log
    start=$(date +%s)
    # shellcheck disable=SC2086
    run $COMMON --steps 1 > "$OUT/pretrain.log"
    echo "pilot.sh: pretraining (or cache check) took $(( $(date +%s) - start )) s" | tee "$OUT/runtime.txt" >&2
    for rank in $RANKS; do for lr in $LRS; do for seed in $SEEDS; do
        name="r${rank}_lr${lr}_adamw_s${seed}"
        t0=$(date +%s)
        # shellcheck disable=SC2086
        run $COMMON --rank "$rank" --lr "$lr" --seed "$seed" --quiet --csv "$OUT/runs/$name.csv" \
            > "$OUT/runs/$name.log" 2>&1 || { echo "pilot.sh: $name failed" >&2; exit 1; }
        echo "pilot.sh: $name $(( $(date +%s) - t0 )) s" >&2
    done; done; done
    echo "pilot.sh: all runs took $(( $(date +%s) - start )) s (load: $(uptime | sed 's/.*load average: //'))" |
        tee -a "$OUT/runtime.txt" >&2
fi

# runs.csv from the summary line of every log.
{
    echo "rank,lr,seed,final_train,final_eval,eval_se,best_eval,step_ms,mgpo_version,commit"
    for log in "$OUT"/runs/*.log; do
        base=$(basename "$log" .log)
        awk -v base="$base" '/^final / {
            split(base, f, "_"); for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
            printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", substr(f[1], 2), substr(f[2], 3), substr(f[4], 2),
                   v["train_loss"], v["eval_loss"], v["eval_se"], v["best_eval_loss"], v["step_ms"],
                   v["mgpo_version"], v["commit"] }' "$log"
    done | sort -t, -k1,1n -k2,2g -k3,3n
} > "$OUT/runs.csv"

# The evaluated points of every run: "run step train heldout".
for csv in "$OUT"/runs/*.csv; do
    awk -F, -v run="$(basename "$csv" .csv)" 'NR > 1 && $4 != "" { print run, $1, $4, $5 }' "$csv"
done > "$OUT/points.txt"

# The noise floor, the rebound of every run and the transient divergences,
# as the plan defines them (rebounds.awk).
awk -v steps="$STEPS" -f "$(dirname "$0")/rebounds.awk" "$OUT/points.txt" > "$OUT/rebounds.md"
cat "$OUT/runs.csv" "$OUT/rebounds.md"

command -v gnuplot > /dev/null || { echo "pilot.sh: gnuplot not installed, no pictures" >&2; exit 0; }
# Seed means per setting.
awk '{ k = $1; sub(/_s[0-9]+$/, "", k); key = k " " $2; if (!(key in n)) order[++m] = key
       n[key]++; t[key] += $3; e[key] += $4 }
     END { for (i = 1; i <= m; i++) { split(order[i], f, " "); print f[1], f[2], t[order[i]] / n[order[i]], e[order[i]] / n[order[i]] } }' \
    "$OUT/points.txt" > "$OUT/means.txt"
nr=$(echo $RANKS | wc -w) nl=$(echo $LRS | wc -w)
for col in 3 4; do
    what=$([ $col = 3 ] && echo training || echo held-out)
    png="$OUT/pilot_$([ $col = 3 ] && echo train || echo heldout).png"
    {
        echo "set terminal pngcairo size $(( nl * 360 )),$(( nr * 260 )) font ',8'"
        echo "set output '$png'"
        echo "set multiplot layout $nr,$nl title 'pilot, AdamW, $what loss (validation split for held-out): thin = seeds $SEEDS, thick = mean'"
        echo "set grid; set xlabel 'step'; set key top right"
        for rank in $RANKS; do for lr in $LRS; do
            echo "set title 'r = alpha = $rank, lr $lr'"
            sep="plot "
            for seed in $SEEDS; do
                printf "%s'< grep \"^r%s_lr%s_adamw_s%s \" %s' using 2:%s with lines lw 0.8 title 'seed %s'" \
                    "$sep" "$rank" "$lr" "$seed" "$OUT/points.txt" "$col" "$seed"
                sep=", "
            done
            printf "%s'< grep \"^r%s_lr%s_adamw \" %s' using 2:%s with lines lw 2.5 lc rgb 'black' title 'mean'\n" \
                "$sep" "$rank" "$lr" "$OUT/means.txt" "$col"
        done; done
        echo "unset multiplot"
    } | gnuplot
done
echo "pilot.sh: wrote $OUT/{runs.csv,rebounds.md,pilot_train.png,pilot_heldout.png}" >&2
