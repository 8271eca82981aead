#!/usr/bin/env bash
# sweep.sh: the paper's transformer figures in miniature, with gpt_lora.
#   Fig. 2: rank sweep, r = alpha, at a high learning rate (HIGH_LR);
#   Fig. 3: learning-rate sweep at the top rank (TOP_RANK);
#   Fig. 4 / Table 4: at (TOP_RANK, HIGH_LR) also MGPO without APN and the
#   random-direction baseline;
#   Table 3: time per step and optimizer memory, MGPO against plain AdamW.
# Every setting runs for every seed; runs with the same seed share the data
# order, the pretrained model and the adapter initialisation, so they pair.
#
#   cmake -S . -B build && cmake --build build -j2 --target gpt_lora
#   nice -n 15 examples/gpt_lora/sweep.sh          # writes build/gpt-sweep/
#
# Settings from the environment [defaults]:
#   GPT_LORA     the program                 [build/examples/gpt_lora/gpt_lora]
#   OUT          output directory            [build/gpt-sweep]
#   MODEL_CACHE  pretrained model cache      [build/gpt_small.model]
#   PRETRAIN     pretraining steps           [2000]
#   RANKS        ranks of the rank sweep     [8 16 32 64]
#   HIGH_LR      lr of the rank sweep        [0.02]
#   LRS          lrs of the lr sweep         [0.005 0.01 0.02 0.03]
#   TOP_RANK     rank of the lr sweep        [64]
#   SEEDS        seeds                       [1 2 3]
#   OPTIMIZERS   adamw, mgpo-rho<R>          [adamw mgpo-rho0.05 mgpo-rho0.5]
#   ABLATIONS    apnoff-rho<R>, random-rho<R> at (TOP_RANK, HIGH_LR)
#                                            [apnoff-rho0.5 random-rho0.5]
#   STEPS        fine-tuning steps per run   [200]
#   EVAL_EVERY   evaluation interval         [10]
#   JOBS         runs in parallel            [2]
#   EXTRA        more gpt_lora flags         [--lora-mode tensors]
#   SKIP_RUNS    1: only summarise and plot what OUT holds
# Outputs: OUT/runs/<run>.{csv,log}, OUT/runs.csv (one line per run),
# OUT/summary.md (mean ± std over seeds), OUT/paired.md (minus AdamW on the
# same seed), OUT/cost.md, OUT/curves/*.dat and with gnuplot
# OUT/{curves_rank,curves_lr,rebound,heldout_final,heldout_best}.png.
set -euo pipefail

GPT_LORA=${GPT_LORA:-build/examples/gpt_lora/gpt_lora}
OUT=${OUT:-build/gpt-sweep}
MODEL_CACHE=${MODEL_CACHE:-build/gpt_small.model}
PRETRAIN=${PRETRAIN:-2000}
RANKS=${RANKS:-8 16 32 64}
HIGH_LR=${HIGH_LR:-0.02}
LRS=${LRS:-0.005 0.01 0.02 0.03}
TOP_RANK=${TOP_RANK:-64}
SEEDS=${SEEDS:-1 2 3}
OPTIMIZERS=${OPTIMIZERS:-adamw mgpo-rho0.05 mgpo-rho0.5}
ABLATIONS=${ABLATIONS:-apnoff-rho0.5 random-rho0.5}
STEPS=${STEPS:-200}
EVAL_EVERY=${EVAL_EVERY:-10}
JOBS=${JOBS:-2}
EXTRA=${EXTRA:---lora-mode tensors}
SKIP_RUNS=${SKIP_RUNS:-0}
# The commit the runs come from, recorded in every CSV and in the cache key
# ("-dirty": uncommitted changes, so the numbers are not reproducible).
COMMIT=${COMMIT:-$(git -C "$(dirname "$0")" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)}
COMMON="--commit $COMMIT --model-cache $MODEL_CACHE --pretrain-steps $PRETRAIN --steps $STEPS --eval-every $EVAL_EVERY $EXTRA"

flags_of() { # an optimizer label -> gpt_lora flags
    case $1 in
        adamw) echo "--optimizer adamw" ;;
        mgpo-rho*) echo "--optimizer mgpo --rho ${1#mgpo-rho}" ;;
        apnoff-rho*) echo "--optimizer mgpo --rho ${1#apnoff-rho} --apn off" ;;
        random-rho*) echo "--optimizer mgpo --rho ${1#random-rho} --direction random" ;;
        *) echo "sweep.sh: unknown optimizer label $1" >&2; exit 1 ;;
    esac
}

# One line per run: "rank lr label seed" (settings of both sweeps, once each).
settings() {
    for rank in $RANKS; do for opt in $OPTIMIZERS; do echo "$rank $HIGH_LR $opt"; done; done
    for lr in $LRS; do for opt in $OPTIMIZERS; do echo "$TOP_RANK $lr $opt"; done; done
    for opt in $ABLATIONS; do echo "$TOP_RANK $HIGH_LR $opt"; done
}

run_all() {
    if [ ! -x "$GPT_LORA" ]; then
        echo "sweep.sh: $GPT_LORA not found; build it or set GPT_LORA" >&2
        exit 1
    fi
    rm -f "$OUT"/runs/*.csv "$OUT"/runs/*.log
    # Pretrain (or check the cache) once, before the parallel runs read it.
    # shellcheck disable=SC2086
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 "$GPT_LORA" $COMMON --steps 1 --quiet > "$OUT/pretrain.log"
    jobs_file="$OUT/jobs.txt"
    settings | awk '!seen[$0]++' | while read -r rank lr opt; do
        for seed in $SEEDS; do
            echo "$OUT/runs/r${rank}_lr${lr}_${opt}_s${seed}.csv --rank $rank --lr $lr --seed $seed $(flags_of "$opt") $COMMON"
        done
    done > "$jobs_file"
    echo "sweep.sh: $(wc -l < "$jobs_file") runs, $JOBS at a time" >&2
    start=$(date +%s)
    export GPT_LORA
    # One thread per run: JOBS runs fill the cores better than threads do.
    # shellcheck disable=SC2016  # expanded by the inner shell
    OMP_NUM_THREADS=1 xargs -P "$JOBS" -L 1 sh -c \
        'csv=$1; shift; "$GPT_LORA" --quiet --csv "$csv" "$@" > "${csv%.csv}.log" 2>&1 ||
         { echo "failed: $GPT_LORA $*" >&2; exit 255; }' sh < "$jobs_file"
    echo "sweep.sh: runs took $(( $(date +%s) - start )) s (load: $(uptime | sed 's/.*load average: //'))" |
        tee "$OUT/runtime.txt" >&2
}

mkdir -p "$OUT/runs" "$OUT/curves"
if [ "$SKIP_RUNS" != 1 ]; then run_all; fi
rm -f "$OUT"/curves/*.dat

# runs.csv from the last line of every log.
{
    echo "rank,lr,optimizer,seed,final_train,final_eval,best_eval,rebound,initial_train,step_ms,optimizer_bytes,mgpo_version,commit"
    for log in "$OUT"/runs/*.log; do
        base=$(basename "$log" .log)
        awk -v base="$base" '/^final / {
            split(base, f, "_"); for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
            printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", substr(f[1], 2), substr(f[2], 3), f[3], substr(f[4], 2),
                   v["train_loss"], v["eval_loss"], v["best_eval_loss"], v["max_rebound"], v["initial_train_loss"],
                   v["step_ms"], v["optimizer_bytes"], v["mgpo_version"], v["commit"] }' "$log"
    done | sort -t, -k1,1n -k2,2g -k3,3 -k4,4n
} > "$OUT/runs.csv"

# Mean ± sample std over seeds per setting.
awk -F, 'NR > 1 {
        k = $1 "," $2 "," $3; if (!(k in n)) order[++m] = k
        n[k]++; for (c = 5; c <= 10; c++) { s[k, c] += $c; q[k, c] += $c * $c } }
    function sd(k, c) { return n[k] > 1 ? sqrt((q[k, c] - s[k, c] * s[k, c] / n[k]) / (n[k] - 1)) : 0 }
    END {
        print "| rank | lr | optimizer | seeds | final train loss | final held-out loss | best held-out loss | largest rebound | ms/step |"
        print "| ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (i = 1; i <= m; i++) { k = order[i]; split(k, f, ",")
            printf "| %s | %s | %s | %d", f[1], f[2], f[3], n[k]
            for (c = 5; c <= 8; c++) printf " | %.4f ± %.4f", s[k, c] / n[k], sd(k, c)
            printf " | %.1f |\n", s[k, 10] / n[k] } }' "$OUT/runs.csv" > "$OUT/summary.md"

# Paired with AdamW on the same seed: mean difference and wins.
awk -F, 'NR > 1 { k = $1 "," $2; line[NR] = $0
        if ($3 == "adamw") { bf[k, $4] = $6; bb[k, $4] = $7; br[k, $4] = $8 } }
    END {
        print "| rank | lr | optimizer | pairs | Δ final held-out | Δ best held-out | Δ largest rebound | lower final | lower best | lower rebound |"
        print "| ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (i = 2; i <= NR; i++) { split(line[i], f, ","); k = f[1] "," f[2]
            if (f[3] == "adamw" || !((k, f[4]) in bf)) continue
            s = k "," f[3]; if (!(s in np)) order[++m] = s
            np[s]++; df[s] += f[6] - bf[k, f[4]]; db[s] += f[7] - bb[k, f[4]]; dr[s] += f[8] - br[k, f[4]]
            wf[s] += f[6] < bf[k, f[4]]; wb[s] += f[7] < bb[k, f[4]]; wr[s] += f[8] < br[k, f[4]] }
        for (i = 1; i <= m; i++) { s = order[i]; split(s, f, ",")
            printf "| %s | %s | %s | %d | %+.4f | %+.4f | %+.4f | %d/%d | %d/%d | %d/%d |\n", f[1], f[2], f[3], np[s],
                   df[s] / np[s], db[s] / np[s], dr[s] / np[s], wf[s], np[s], wb[s], np[s], wr[s], np[s] } }' \
    "$OUT/runs.csv" > "$OUT/paired.md"

# Table 3: time per step and optimizer memory against AdamW, at the top rank.
awk -F, -v rank="$TOP_RANK" -v lr="$HIGH_LR" 'NR > 1 && $1 == rank && $2 == lr {
        if (!($3 in n)) order[++m] = $3; n[$3]++; ms[$3] += $10; by[$3] = $11 }
    END {
        print "| optimizer | runs | ms/step (mean) | vs AdamW | optimizer memory (bytes) | vs AdamW |"
        print "| :--- | ---: | ---: | ---: | ---: | ---: |"
        for (i = 1; i <= m; i++) { o = order[i]; t = ms[o] / n[o]; t0 = ms["adamw"] / n["adamw"]
            printf "| %s | %d | %.1f | %+.1f %% | %d | %+d |\n", o, n[o], t, 100 * (t / t0 - 1), by[o], by[o] - by["adamw"] } }' \
    "$OUT/runs.csv" > "$OUT/cost.md"
cat "$OUT/summary.md" "$OUT/paired.md" "$OUT/cost.md"

# Seed-mean curves per setting: step, train loss, held-out loss.
for csv in "$OUT"/runs/*_s*.csv; do
    base=$(basename "$csv" .csv)
    awk -F, -v run="${base%_s*}" 'NR > 1 && $4 != "" { print run "," $1 "," $4 "," $5 }' "$csv"
done | awk -F, -v dir="$OUT/curves" '{ k = $1 SUBSEP $2; if (!(k in n)) { key[++m] = k }
        n[k]++; t[k] += $3; e[k] += $4 }
    END { for (i = 1; i <= m; i++) { split(key[i], f, SUBSEP)
            printf "%s %.6f %.6f\n", f[2], t[key[i]] / n[key[i]], e[key[i]] / n[key[i]] >> (dir "/" f[1] ".dat") } }'

if ! command -v gnuplot > /dev/null; then
    echo "sweep.sh: gnuplot not installed, no pictures" >&2
    exit 0
fi

# One column per panel "rank@lr"; top row training loss, bottom held-out.
curves() { # $1 png, $2 title, then the panels
    local png=$1 title=$2 col panel rank lr opt f sep
    shift 2
    {
        echo "set terminal pngcairo size $(( $# * 380 )),560 font ',9'"
        echo "set output '$png'"
        echo "set multiplot layout 2,$# title '$title (mean of seeds $SEEDS)'"
        echo "set grid; set xlabel 'step'; set key top right"
        for col in 2 3; do
            for panel in "$@"; do
                rank=${panel%@*} lr=${panel#*@}
                echo "set title 'r $rank, lr $lr: $([ "$col" = 2 ] && echo training || echo held-out) loss'"
                sep="plot "
                for opt in $OPTIMIZERS $ABLATIONS; do
                    f="$OUT/curves/r${rank}_lr${lr}_$opt.dat"
                    [ -f "$f" ] || continue
                    printf "%s'%s' using 1:%s with lines lw 1.3 title '%s'" "$sep" "$f" "$col" "$opt"
                    sep=", "
                done
                echo
            done
        done
        echo "unset multiplot"
    } | gnuplot
}
# shellcheck disable=SC2046
curves "$OUT/curves_rank.png" "rank sweep at lr $HIGH_LR (Fig. 2)" $(for r in $RANKS; do echo "$r@$HIGH_LR"; done)
# shellcheck disable=SC2046
curves "$OUT/curves_lr.png" "lr sweep at rank $TOP_RANK (Fig. 3)" $(for l in $LRS; do echo "$TOP_RANK@$l"; done)

# Per run against its setting: the largest rebound, and the final and best
# held-out loss minus AdamW's on the same seed.  x = setting index, labels
# offset so that they do not overlap; one point per seed.
awk -F, 'NR > 1 { k = $1 "," $2; if (!(k in idx)) { idx[k] = ++m; print "#setting", m, "r" $1 "/lr" $2 > "/dev/stderr" }
        if ($3 == "adamw") { bf[k, $4] = $6; bb[k, $4] = $7 }
        row[NR] = $0 }
    END { for (i = 2; i <= NR; i++) { split(row[i], f, ","); k = f[1] "," f[2]
            d1 = ((k, f[4]) in bf) ? f[6] - bf[k, f[4]] : "NaN"; d2 = ((k, f[4]) in bb) ? f[7] - bb[k, f[4]] : "NaN"
            print f[3], idx[k], f[4], f[8], d1, d2 } }' "$OUT/runs.csv" > "$OUT/curves/points.txt" 2> "$OUT/curves/settings.txt"
xtics=$(awk '{ printf "%s\"%s\" %d", (NR > 1 ? ", " : ""), $3, $2 }' "$OUT/curves/settings.txt")
points() { # $1 column, $2 title, $3 png, $4 labels
    local sep="plot " k=0 opt
    {
        echo "set terminal pngcairo size 900,420 font ',9'"
        echo "set output '$3'"
        echo "set grid; set key outside right; set xtics ($xtics) rotate by -30"
        echo "set title '$2'"
        for opt in $4; do
            printf "%s'< grep \"^%s \" %s' using (\$2 + %s):%s with points pt %d title '%s'" "$sep" "$opt" \
                "$OUT/curves/points.txt" "0.$((k * 12))" "$1" "$((k + 4))" "$opt"
            sep=", "
            k=$((k + 1))
        done
        echo
    } | gnuplot
}
points 4 "largest training-loss rebound per run (one point per seed)" "$OUT/rebound.png" "$OPTIMIZERS $ABLATIONS"
non_adamw=$(echo "$OPTIMIZERS $ABLATIONS" | tr ' ' '\n' | grep -v '^adamw$' | tr '\n' ' ')
points 5 "final held-out loss minus AdamW on the same seed (below 0: better)" "$OUT/heldout_final.png" "$non_adamw"
points 6 "best held-out loss minus AdamW on the same seed (below 0: better)" "$OUT/heldout_best.png" "$non_adamw"
echo "sweep.sh: wrote $OUT/{summary,paired,cost}.md and $OUT/*.png" >&2
