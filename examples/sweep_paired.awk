# sweep_paired.awk: paired comparison of each optimizer with AdamW on the same
# seed (same data, same pretrained network, same adapter initialisation), read
# from the per-run lines of sweep_summary.awk -v runs_out=FILE:
#   rank,lr,optimizer,seed,train_loss,eval_acc,rebound,eval_loss,peak_acc
# For every (rank, lr, optimizer other than adamw) prints one CSV line:
#   rank,lr,optimizer,pairs, mean over seeds of (optimizer - adamw) for the
#   final training loss, held-out accuracy and largest rebound, then in how
#   many pairs the optimizer had a strictly lower final training loss, a
#   strictly higher accuracy, and a strictly lower rebound; last the mean
#   difference of the peak accuracy and in how many pairs it was higher.
# Output order is unspecified: pipe through sort.

BEGIN { FS = "," }

$1 == "rank" { next }   # a header line

{
    setting = $1 "," $2
    if ($3 == "adamw") {
        base_train[setting, $4] = $5; base_acc[setting, $4] = $6; base_reb[setting, $4] = $7
        base_peak[setting, $4] = $9
        has_base[setting, $4] = 1
    } else {
        n++
        r_key[n] = setting "," $3; r_set[n] = setting; r_seed[n] = $4
        r_train[n] = $5; r_acc[n] = $6; r_reb[n] = $7; r_peak[n] = $9
    }
}

END {
    for (i = 1; i <= n; i++) {
        b = r_set[i] SUBSEP r_seed[i]
        if (!(b in has_base)) continue
        k = r_key[i]
        if (!(k in pairs)) order[++nk] = k
        pairs[k]++
        d_train[k] += r_train[i] - base_train[b]
        d_acc[k] += r_acc[i] - base_acc[b]
        d_reb[k] += r_reb[i] - base_reb[b]
        w_train[k] += r_train[i] < base_train[b]
        w_acc[k] += r_acc[i] > base_acc[b]
        w_reb[k] += r_reb[i] < base_reb[b]
        d_peak[k] += r_peak[i] - base_peak[b]
        w_peak[k] += r_peak[i] > base_peak[b]
    }
    for (j = 1; j <= nk; j++) {
        k = order[j]
        printf "%s,%d,%.6f,%.6f,%.6f,%d,%d,%d,%.6f,%d\n", k, pairs[k], d_train[k] / pairs[k],
               d_acc[k] / pairs[k], d_reb[k] / pairs[k], w_train[k], w_acc[k], w_reb[k],
               d_peak[k] / pairs[k], w_peak[k]
    }
}
