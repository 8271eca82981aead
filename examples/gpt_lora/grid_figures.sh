#!/usr/bin/env bash
# grid_figures.sh OUT: the main grid's loss curves with gnuplot, from
# OUT/points.txt ("run step train validation", written by main_grid.sh).
# Per setting (S1, S2): OUT/<setting>_arms.png, the mean over seeds of every
# arm at lr* in one panel each for the training and the validation loss; and
# OUT/<setting>_train.png, OUT/<setting>_heldout.png, one panel per arm
# (thin: each seed, thick: the mean).  Without gnuplot it says so and exits 0.
set -euo pipefail
OUT=${1:?usage: grid_figures.sh OUT}
command -v gnuplot > /dev/null || { echo "grid_figures.sh: gnuplot not installed, no pictures" >&2; exit 0; }
# Seed means: "setting_r_lr_arm step train validation".
awk '{ k = $1; sub(/_s[0-9]+$/, "", k); key = k " " $2; if (!(key in n)) order[++m] = key
       n[key]++; t[key] += $3; e[key] += $4 }
     END { for (i = 1; i <= m; i++) { split(order[i], f, " ")
           print f[1], f[2], t[order[i]] / n[order[i]], e[order[i]] / n[order[i]] } }' \
    "$OUT/points.txt" > "$OUT/means.txt"
for setting in $(awk '{ split($1, f, "_"); print f[1] }' "$OUT/points.txt" | sort -u); do
    # Arms in the order the grid ran them; only those at lr* (the tuned lr).
    lr_star=$(sed -n 's/.*S1 lr\* = \([^ ]*\).*/\1/p' "$OUT/choices.txt")
    arms=$(awk -v s="$setting" -v lr="$lr_star" '{ split($1, f, "_"); if (f[1] == s && f[3] == "lr" lr && !seen[f[4]]++) print f[4] }' \
        "$OUT/means.txt")
    prefix=${setting}_$(awk -v s="$setting" '{ split($1, f, "_"); if (f[1] == s) { print f[2]; exit } }' "$OUT/means.txt")_lr${lr_star}_
    narms=$(echo "$arms" | wc -w)
    {
        echo "set terminal pngcairo size 1100,460 font ',9' noenhanced"
        echo "set output '$OUT/${setting}_arms.png'"
        echo "set multiplot layout 1,2 title '$setting (${prefix%_}): mean over seeds per arm'"
        echo "set grid; set xlabel 'step'; set key top right font ',8' noenhanced"
        for col in 3 4; do
            echo "set title '$([ $col = 3 ] && echo training || echo validation) loss'"
            sep="plot "
            for arm in $arms; do
                printf "%s'< grep \"^%s%s \" %s' using 2:%s with lines lw 1.5 title '%s'" \
                    "$sep" "$prefix" "$arm" "$OUT/means.txt" "$col" "$arm"
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
            echo "set output '$OUT/${setting}_$([ $col = 3 ] && echo train || echo heldout).png'"
            echo "set multiplot layout $rows,$cols title '$setting (${prefix%_}): $what loss, thin = each seed, thick = mean'"
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
done
echo "grid_figures.sh: wrote $OUT/{S1,S2}_{arms,train,heldout}.png" >&2
