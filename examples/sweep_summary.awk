# sweep_summary.awk: summarises lora_finetune CSV files (POSIX awk, no gawk).
#
# Input: files named  <dir>/r<rank>_lr<lr>_<optimizer>_s<seed>.csv  with the
# columns  optimizer,step,lr,batch_loss,train_loss,eval_loss,eval_acc  (the
# last three are empty on steps without an evaluation).
#
# Per setting (rank, lr, optimizer) over its seeds, prints one CSV line:
#   rank,lr,optimizer,runs, mean and sample std of: the final training loss,
#   the final held-out accuracy, the largest transient loss rebound (the
#   maximum over evaluated steps of the training loss minus its running
#   minimum so far), the final held-out loss, and the peak held-out accuracy
#   over the run (what early stopping would keep).
# With -v curves=DIR it also writes DIR/r<rank>_lr<lr>_<optimizer>.dat: per
# evaluated step, the mean over seeds of training loss, held-out loss and
# accuracy (for plotting), and DIR/<run>.dat with the same columns for each
# single run.  With -v runs_out=FILE it writes one line per run to FILE:
# rank,lr,optimizer,seed,train_loss,eval_acc,rebound,eval_loss,peak_acc (the
# input of sweep_paired.awk), appending.  Output order is unspecified: pipe
# through sort.

BEGIN { FS = "," }

FNR == 1 {
    finish()
    n = split(FILENAME, parts, "/")
    base = parts[n]
    sub(/\.csv$/, "", base)
    # r<rank>_lr<lr>_<optimizer>_s<seed>; the optimizer label has no "_".
    split(base, f, "_")
    key = substr(f[1], 2) "," substr(f[2], 3) "," f[3]
    seed = substr(f[4], 2)
    if (curves != "") { if (run_out != "") close(run_out); run_out = curves "/" base ".dat" }
    started = 0
    next
}

$5 != "" {
    loss = $5 + 0
    if (!started) { runmin = loss; rebound = 0; peak = $7 + 0; started = 1 }
    if ($7 + 0 > peak) peak = $7 + 0
    if (loss < runmin) runmin = loss
    if (loss - runmin > rebound) rebound = loss - runmin
    last_train = loss; last_eval = $6 + 0; last_acc = $7 + 0
    ck = key SUBSEP ($2 + 0)
    if (!(ck in c_n)) { steps[key] = steps[key] " " ($2 + 0) }
    c_n[ck]++; c_train[ck] += loss; c_eval[ck] += $6; c_acc[ck] += $7
    if (curves != "") printf "%d %.6f %.6f %.6f\n", $2, loss, $6, $7 > run_out
}

# Adds the finished file's final values to its setting.
function finish() {
    if (!started) return
    if (!(key in runs)) order[++nkeys] = key
    if (runs_out != "")
        printf "%s,%s,%.6f,%.6f,%.6f,%.6f,%.6f\n", key, seed, last_train, last_acc, rebound,
               last_eval, peak >> runs_out
    runs[key]++
    s_train[key] += last_train; q_train[key] += last_train * last_train
    s_acc[key] += last_acc;     q_acc[key] += last_acc * last_acc
    s_reb[key] += rebound;      q_reb[key] += rebound * rebound
    s_eval[key] += last_eval;   q_eval[key] += last_eval * last_eval
    s_peak[key] += peak;        q_peak[key] += peak * peak
    started = 0
}

function mean(s, k) { return s / runs[k] }
function sd(s, q, k,    m, v) {
    if (runs[k] < 2) return 0
    m = s / runs[k]
    v = (q - runs[k] * m * m) / (runs[k] - 1)
    return v > 0 ? sqrt(v) : 0
}

END {
    finish()
    for (i = 1; i <= nkeys; i++) {
        k = order[i]
        printf "%s,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f\n", k, runs[k],
               mean(s_train[k], k), sd(s_train[k], q_train[k], k),
               mean(s_acc[k], k), sd(s_acc[k], q_acc[k], k),
               mean(s_reb[k], k), sd(s_reb[k], q_reb[k], k),
               mean(s_eval[k], k), sd(s_eval[k], q_eval[k], k),
               mean(s_peak[k], k), sd(s_peak[k], q_peak[k], k)
        if (curves != "") {
            split(k, kk, ",")
            out = curves "/r" kk[1] "_lr" kk[2] "_" kk[3] ".dat"
            printf "# step mean_train_loss mean_eval_loss mean_eval_acc (over seeds)\n" > out
            ns = split(steps[k], st, " ")
            for (j = 1; j <= ns; j++) {
                ck = k SUBSEP st[j]
                printf "%d %.6f %.6f %.6f\n", st[j], c_train[ck] / c_n[ck],
                       c_eval[ck] / c_n[ck], c_acc[ck] / c_n[ck] > out
            }
            close(out)
        }
    }
}
