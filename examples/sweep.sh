#!/usr/bin/env bash
# sweep.sh: the paper's Figures 2-3 in miniature.  Runs lora_finetune for
# every rank x learning rate x seed x optimizer, summarises the runs with
# sweep_summary.awk and, when gnuplot is installed, plots the mean curves.
#
#   cmake -S . -B build && cmake --build build -j2 --target lora_finetune
#   examples/sweep.sh                       # writes build/sweep-out/
#
# Settings come from the environment (defaults in brackets):
#   LORA_FINETUNE  the program                      [build/examples/lora_finetune]
#   OUT            output directory                 [build/sweep-out]
#   RANKS          LoRA ranks                       [8 64 128]
#   LRS            peak learning rates              [0.003 0.006 0.01 0.02]
#   SEEDS          seeds                            [1 2 3]
#   OPTIMIZERS     adamw and/or mgpo-rho<RHO>       [adamw mgpo-rho0.05 mgpo-rho0.2 mgpo-rho0.5]
#   STEPS          steps per run                    [300]
#   EVAL_EVERY     evaluation interval              [5]
#   JOBS           runs in parallel                 [2]
#   EXTRA          more lora_finetune flags         []
#   SKIP_RUNS      1: only re-summarise and re-plot the runs already in OUT
# Outputs: OUT/runs/*.csv (one per run), OUT/runs.csv (final values per run),
# OUT/summary.{csv,md} (mean and std over seeds), OUT/paired.{csv,md} (each
# optimizer minus AdamW on the same seed), OUT/curves/*.dat and, with gnuplot,
# OUT/train_loss.png, OUT/eval_acc.png and OUT/rebounds.png.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LORA_FINETUNE=${LORA_FINETUNE:-build/examples/lora_finetune}
# The commit recorded in every CSV ("-dirty": uncommitted changes).
COMMIT=${COMMIT:-$(git -C "$(dirname "$0")" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)}
OUT=${OUT:-build/sweep-out}
RANKS=${RANKS:-8 64 128}
LRS=${LRS:-0.003 0.006 0.01 0.02}
SEEDS=${SEEDS:-1 2 3}
OPTIMIZERS=${OPTIMIZERS:-adamw mgpo-rho0.05 mgpo-rho0.2 mgpo-rho0.5}
STEPS=${STEPS:-300}
EVAL_EVERY=${EVAL_EVERY:-5}
JOBS=${JOBS:-2}
EXTRA=${EXTRA:-}

SKIP_RUNS=${SKIP_RUNS:-0}

# Runs every setting (a function, so bash has read all of it before it starts).
run_all() {
    if [ ! -x "$LORA_FINETUNE" ]; then
        echo "sweep.sh: $LORA_FINETUNE not found; build it or set LORA_FINETUNE" >&2
        exit 1
    fi
    rm -f "$OUT"/runs/*.csv "$OUT"/runs/*.log

    # One line per run: the CSV path followed by lora_finetune's flags (no
    # trailing blank: xargs -L would join the next line).
    jobs_file="$OUT/jobs.txt"
    : > "$jobs_file"
    for rank in $RANKS; do
        for lr in $LRS; do
            for opt in $OPTIMIZERS; do
                case $opt in
                    adamw) flags="--optimizer adamw" ;;
                    mgpo-rho*) flags="--optimizer mgpo --rho ${opt#mgpo-rho}" ;;
                    *) echo "sweep.sh: unknown optimizer label $opt" >&2; exit 1 ;;
                esac
                for seed in $SEEDS; do
                    echo "$OUT/runs/r${rank}_lr${lr}_${opt}_s${seed}.csv --commit $COMMIT --rank $rank --lr $lr" \
                         "--seed $seed --steps $STEPS --eval-every $EVAL_EVERY $flags${EXTRA:+ $EXTRA}" \
                         >> "$jobs_file"
                done
            done
        done
    done
    echo "sweep.sh: $(wc -l < "$jobs_file") runs, $JOBS at a time" >&2

    start=$(date +%s)
    export LORA_FINETUNE
    # shellcheck disable=SC2016  # expanded by the inner shell
    xargs -P "$JOBS" -L 1 sh -c \
        'csv=$1; shift; "$LORA_FINETUNE" --quiet --csv "$csv" "$@" > "${csv%.csv}.log" 2>&1 ||
         { echo "failed: $LORA_FINETUNE $*" >&2; exit 255; }' sh < "$jobs_file"
    echo "sweep.sh: runs took $(( $(date +%s) - start )) s" >&2
}

mkdir -p "$OUT/runs" "$OUT/curves"
if [ "$SKIP_RUNS" != 1 ]; then run_all; fi
rm -f "$OUT"/curves/*.dat

header="rank,lr,optimizer,runs,train_loss_mean,train_loss_std,eval_acc_mean,eval_acc_std,rebound_mean,rebound_std,eval_loss_mean,eval_loss_std,peak_acc_mean,peak_acc_std"
{
    echo "$header"
    echo "rank,lr,optimizer,seed,train_loss,eval_acc,rebound,eval_loss,peak_acc" > "$OUT/runs.csv"
    awk -v curves="$OUT/curves" -v runs_out="$OUT/runs.csv" -f "$here/sweep_summary.awk" \
        "$OUT"/runs/*.csv | sort -t, -k1,1n -k2,2g -k3,3
} > "$OUT/summary.csv"
{
    echo "rank,lr,optimizer,pairs,d_train_loss,d_eval_acc,d_rebound,lower_train_loss,higher_acc,lower_rebound,d_peak_acc,higher_peak_acc"
    awk -f "$here/sweep_paired.awk" "$OUT/runs.csv" | sort -t, -k1,1n -k2,2g -k3,3
} > "$OUT/paired.csv"
# Which library and commit produced the runs (every run's CSV carries them in
# its last two columns): appended to each summary CSV; several values mean a
# mixed sweep, and say so.
provenance=$(awk -F, 'FNR == 2 { print $(NF - 1) "," $NF }' "$OUT"/runs/*.csv | sort -u | paste -sd'|' -)
for f in runs summary paired; do
    awk -v p="$provenance" 'NR == 1 { print $0 ",mgpo_version,commit"; next } { print $0 "," p }' \
        "$OUT/$f.csv" > "$OUT/$f.csv.tmp" && mv "$OUT/$f.csv.tmp" "$OUT/$f.csv"
done

# The same table in Markdown, mean +- std over seeds.
awk -F, 'NR == 1 {
        print "| rank | lr | optimizer | seeds | final train loss | held-out accuracy | largest loss rebound | final held-out loss | peak held-out accuracy |"
        print "| ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: |"
        next }
    { printf "| %s | %s | %s | %s | %.4f ± %.4f | %.3f ± %.3f | %.4f ± %.4f | %.3f ± %.3f | %.3f ± %.3f |\n",
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 }' \
    "$OUT/summary.csv" > "$OUT/summary.md"
cat "$OUT/summary.md"

# The paired comparison: each optimizer minus AdamW on the same seed.
awk -F, 'NR == 1 {
        print "| rank | lr | optimizer | pairs | Δ final train loss | Δ largest rebound | Δ final accuracy | Δ peak accuracy | lower train loss | lower rebound | higher final acc. | higher peak acc. |"
        print "| ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        next }
    { printf "| %s | %s | %s | %s | %+.4f | %+.4f | %+.3f | %+.3f | %s/%s | %s/%s | %s/%s | %s/%s |\n",
             $1, $2, $3, $4, $5, $7, $6, $11, $8, $4, $10, $4, $9, $4, $12, $4 }' \
    "$OUT/paired.csv" > "$OUT/paired.md"
cat "$OUT/paired.md"

if ! command -v gnuplot > /dev/null; then
    echo "sweep.sh: gnuplot not installed, no pictures" >&2
    exit 0
fi

# Two figures, one panel per (lr, rank), one line per optimizer (seed mean).
plot_figure() { # $1 png, $2 column, $3 y label, $4 extra gnuplot settings
    local nr nc
    nr=$(echo "$LRS" | wc -w)
    nc=$(echo "$RANKS" | wc -w)
    {
        echo "set terminal pngcairo size $((nc * 420)),$((nr * 260)) font ',9'"
        echo "set output '$1'"
        echo "set multiplot layout $nr,$nc title '$3 (mean of seeds: $SEEDS)'"
        echo "set key top right; set grid; set xlabel 'step'; $4"
        for lr in $LRS; do
            for rank in $RANKS; do
                echo "set title 'rank $rank, lr $lr'"
                local sep="plot "
                for opt in $OPTIMIZERS; do
                    printf "%s'%s' using 1:%s with lines lw 1.5 title '%s'" \
                        "$sep" "$OUT/curves/r${rank}_lr${lr}_${opt}.dat" "$2" "$opt"
                    sep=", "
                done
                echo
            done
        done
        echo "unset multiplot"
    } | gnuplot
}
plot_figure "$OUT/train_loss.png" 2 "clean training loss (log scale)" "set logscale y"
plot_figure "$OUT/eval_acc.png" 4 "held-out accuracy" "set key bottom right"

# Seed means hide the rebounds, so a third figure shows single runs: the
# largest rank, every lr (rows) and seed (columns), AdamW against the last
# optimizer label (by default the largest rho).
top_rank=$(echo "$RANKS" | awk '{print $NF}')
last_opt=$(echo "$OPTIMIZERS" | awk '{print $NF}')
{
    nr=$(echo "$LRS" | wc -w)
    nc=$(echo "$SEEDS" | wc -w)
    echo "set terminal pngcairo size $((nc * 420)),$((nr * 260)) font ',9'"
    echo "set output '$OUT/rebounds.png'"
    echo "set multiplot layout $nr,$nc title 'single runs, rank $top_rank: clean training loss (log scale)'"
    echo "set key top right; set grid; set xlabel 'step'; set logscale y"
    for lr in $LRS; do
        for seed in $SEEDS; do
            echo "set title 'rank $top_rank, lr $lr, seed $seed'"
            echo "plot '$OUT/curves/r${top_rank}_lr${lr}_adamw_s${seed}.dat' using 1:2 with lines lw 1.5 title 'adamw'," \
                 "'$OUT/curves/r${top_rank}_lr${lr}_${last_opt}_s${seed}.dat' using 1:2 with lines lw 1.5 title '$last_opt'"
        done
    done
    echo "unset multiplot"
} | gnuplot
echo "sweep.sh: wrote $OUT/summary.csv, $OUT/summary.md, $OUT/*.png" >&2
