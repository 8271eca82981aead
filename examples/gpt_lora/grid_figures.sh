#!/usr/bin/env bash
# grid_figures.sh OUT: the main grid's loss curves with gnuplot, from
# OUT/points.txt ("run step train validation", written by main_grid.sh).
# For every setting and learning rate with two arms or more (at lr*: the
# plan; at another lr: main_grid.sh's exploratory arms), NAME = <setting>
# at lr*, <setting>_lr<lr> otherwise: OUT/NAME_arms.png, the mean over seeds
# of every arm in one panel each for the training and the validation loss;
# OUT/NAME_train.png and OUT/NAME_heldout.png, one panel per arm (thin: each
# seed, thick: the mean).  Without gnuplot it says so and exits 0.
set -euo pipefail
OUT=${1:?usage: grid_figures.sh OUT}
command -v gnuplot > /dev/null || { echo "grid_figures.sh: gnuplot not installed, no pictures" >&2; exit 0; }
# Seed means: "setting_r_lr_arm step train validation".
awk '{ k = $1; sub(/_s[0-9]+$/, "", k); key = k " " $2; if (!(key in n)) order[++m] = key
       n[key]++; t[key] += $3; e[key] += $4 }
     END { for (i = 1; i <= m; i++) { split(order[i], f, " ")
           print f[1], f[2], t[order[i]] / n[order[i]], e[order[i]] / n[order[i]] } }' \
    "$OUT/points.txt" > "$OUT/means.txt"
lr_star=$(sed -n 's/.*S1 lr\* = \([^ ]*\).*/\1/p' "$OUT/choices.txt")
written=()
# Every "setting_rR_lrL_" prefix with two arms or more.
for prefix in $(awk '{ split($1, f, "_"); p = f[1] "_" f[2] "_" f[3] "_"; if (!seen[p, f[4]]++) n[p]++ }
                     END { for (p in n) if (n[p] > 1) print p }' "$OUT/means.txt" | sort); do
    setting=${prefix%%_*} lr=${prefix#*_lr}; lr=${lr%_}
    name=$setting; [ "$lr" = "$lr_star" ] || name=${setting}_lr$lr
    arms=$(awk -v p="$prefix" 'index($1, p) == 1 && !seen[$1]++ { print substr($1, length(p) + 1) }' "$OUT/means.txt")
    narms=$(echo "$arms" | wc -w)
    {
        echo "set terminal pngcairo size 1100,460 font ',9' noenhanced"
        echo "set output '$OUT/${name}_arms.png'"
        echo "set multiplot layout 1,2 title '${prefix%_}: mean over seeds per arm'"
        echo "set grid; set xlabel 'step'; set key top right font ',8'"
        for col in 3 4; do
            echo "set title '$([ $col = 3 ] && echo training || echo validation) loss'"
            sep="plot " i=0
            for arm in $arms; do
                # AdamW, the reference, in thick black; the others in gnuplot's
                # first seven colours (the eighth is black), dashed from the eighth arm on.
                style="lt $(( i % 7 + 1 )) dt $(( i / 7 + 1 )) lw 1.5"
                [ "$arm" = adamw ] && style="lc rgb 'black' lw 3" || i=$(( i + 1 ))
                printf "%s'< grep \"^%s%s \" %s' using 2:%s with lines %s title '%s'" \
                    "$sep" "$prefix" "$arm" "$OUT/means.txt" "$col" "$style" "$arm"
                sep=", "
            done
            echo
        done
        echo "unset multiplot"
    } | gnuplot
    cols=$(( narms < 4 ? narms : 4 )) rows=$(( (narms + 3) / 4 ))
    for col in 3 4; do
        what=$([ $col = 3 ] && echo training || echo validation)
        {
            echo "set terminal pngcairo size $(( cols * 330 )),$(( rows * 250 + 30 )) font ',8' noenhanced"
            echo "set output '$OUT/${name}_$([ $col = 3 ] && echo train || echo heldout).png'"
            echo "set multiplot layout $rows,$cols title '${prefix%_}: $what loss, thin = each seed, thick = mean'"
            echo "set grid; set xlabel 'step'; unset key"
            for arm in $arms; do
                echo "set title '$arm'"
                printf "plot for [f in system('ls $OUT/runs/%s%s_s*.csv | xargs -n1 basename')] '< grep \"^'.f[1:strlen(f)-4].' \" %s' using 2:%s with lines lw 0.6, " \
                    "$prefix" "$arm" "$OUT/points.txt" "$col"
                printf "'< grep \"^%s%s \" %s' using 2:%s with lines lw 2.5 lc rgb 'black'\n" "$prefix" "$arm" "$OUT/means.txt" "$col"
            done
            echo "unset multiplot"
        } | gnuplot
    done
    written+=("$name")
done
echo "grid_figures.sh: wrote {${written[*]}}_{arms,train,heldout}.png in $OUT" >&2
