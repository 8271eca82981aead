# rebounds.awk: the pre-registered rebound analysis of docs/results.md, shared
# by pilot.sh and main_grid.sh.  Input: points.txt lines "run step train
# heldout" (runs in blocks, steps ascending).  -v steps=S: the run length.
# -v floor_runs=REGEX: the runs whose curves define the noise floor (default
# every run; the main grid uses its AdamW runs, as the plan says).
#
# The noise floor F: 3 x the pooled standard deviation of the change of the
# training loss from one evaluation to the next over the second half of
# those runs, where the curves are flat.  Per run: the largest rebound R =
# max_t (L_t - min_{s<=t} L_s), the longest streak of evaluations above that
# running minimum + F, and whether the loss came back within F afterwards.
# A transient divergence: a streak of >= 2 evaluations, then back within F.
# Last, per setting (the run name without its _sN seed suffix): how many
# runs show one, and the mean R.
{ run[NR] = $1; st[NR] = $2; tr[NR] = $3 }
END {
    if (floor_runs == "") floor_runs = "."
    for (i = 2; i <= NR; i++)
        if (run[i] == run[i - 1] && st[i] > steps / 2 && run[i] ~ floor_runs) {
            d = tr[i] - tr[i - 1]; k = run[i]; n[k]++; s[k] += d; q[k] += d * d
        }
    for (k in n) if (n[k] > 1) { pv += (q[k] - s[k] * s[k] / n[k]) / (n[k] - 1); nr++ }
    if (nr == 0) { print "rebounds.awk: no run to measure the noise floor on" > "/dev/stderr"; exit 1 }
    F = 3 * sqrt(pv / nr)
    printf "noise floor F = %.4f nats (3 x the pooled sd of evaluation-to-evaluation changes of the training loss over steps > %d, %d runs matching /%s/)\n\n", F, steps / 2, nr, floor_runs
    print "| run | largest rebound R | at step | evaluations above min + F (longest streak) | back within F after | transient divergence |"
    print "| :--- | ---: | ---: | ---: | :---: | :---: |"
    i = 1; ns = 0
    while (i <= NR) {
        k = run[i]; m = 1e9; R = 0; at = 0; streak = 0; best = 0; back = "n/a"; bestend = 0
        for (j = i; j <= NR && run[j] == k; j++) {
            if (tr[j] < m) m = tr[j]
            if (tr[j] - m > R) { R = tr[j] - m; at = st[j] }
            if (tr[j] > m + F) { streak++; if (streak > best) { best = streak; bestend = j; mref = m } }
            else streak = 0
        }
        end = j
        div = "no"
        if (best >= 2) {
            back = "no"
            for (j = bestend + 1; j < end; j++) if (tr[j] <= mref + F) { back = "yes"; break }
            if (back == "yes") div = "YES"
        }
        printf "| %s | %.4f | %d | %d | %s | %s |\n", k, R, at, best, back, div
        setting = k; sub(/_s[0-9]+$/, "", setting)
        if (!(setting in runs)) order[++ns] = setting
        runs[setting]++; sumR[setting] += R; yes[setting] += div == "YES"; above[setting] += R > F
        i = end
    }
    print "\n| setting | runs | transient divergences | runs with R > F | mean R |"
    print "| :--- | ---: | ---: | ---: | ---: |"
    for (i = 1; i <= ns; i++) {
        k = order[i]
        printf "| %s | %d | %d | %d | %.4f |\n", k, runs[k], yes[k], above[k], sumR[k] / runs[k]
    }
}
