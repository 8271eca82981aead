#!/usr/bin/env python3
"""analyse.py OUT: the analysis of docs/results.md's pre-registered plan for
the runs main_grid.sh left in OUT/runs (Python 3 standard library only).

Primary measure: the final TEST loss.  For every comparison (each MGPO arm
minus tuned AdamW at S1 and S2; random direction and APN off minus MGPO
look-ahead at rho*): the paired difference over seeds, its mean, a 95 %
confidence interval (Student t), the two-sided paired t-test p-value and the
Holm-adjusted p-value across every comparison made.  The generalisation gap
(test - clean training loss), the largest training-loss rebound and the best
validation loss get the same intervals, unadjusted (exploratory).  Cost:
median ms/step and the optimizer's bytes of each arm against AdamW.
"""
import math
import os
import re
import sys
from statistics import mean, median, stdev


def betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile_975(df):
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > 0.05:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


NAME = re.compile(r"^(S\d)_r(\d+)_lr([0-9.e-]+)_(.+)_s(\d+)\.log$")


def load(out):
    runs = {}
    for f in sorted(os.listdir(os.path.join(out, "runs"))):
        m = NAME.match(f)
        if not m:
            continue
        with open(os.path.join(out, "runs", f)) as fh:
            line = next((l for l in fh if l.startswith("final ")), None)
        if line is None:
            continue
        w = line.split()
        v = {w[i]: w[i + 1] for i in range(1, len(w) - 1, 2)}
        rec = {k: float(v[k]) for k in ("test_loss", "train_loss", "eval_loss", "best_eval_loss", "max_rebound",
                                        "step_ms", "optimizer_bytes")}
        rec["gap"] = rec["test_loss"] - rec["train_loss"]
        rec["provenance"] = (v.get("mgpo_version"), v.get("commit"))
        setting, rank, lr, arm, seed = m.groups()
        runs.setdefault((setting, rank, lr, arm), {})[int(seed)] = rec
    return runs


def paired(a, b, key):
    seeds = sorted(set(a) & set(b))
    d = [a[s][key] - b[s][key] for s in seeds]
    n = len(d)
    if n < 2:
        return None
    m, sd = mean(d), stdev(d)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    t = m / (sd / math.sqrt(n)) if sd > 0 else math.inf
    p = t_two_sided_p(t, n - 1) if sd > 0 else 0.0
    wins = sum(x < 0 for x in d)
    return {"n": n, "mean": m, "lo": m - half, "hi": m + half, "p": p, "wins": wins}


def main():
    out = sys.argv[1]
    runs = load(out)
    choices = open(os.path.join(out, "choices.txt")).read()
    lr_star = re.search(r"lr\* = (\S+)", choices).group(1)
    rho_star = re.search(r"rho\* = (\S+)", choices).group(1)
    rho_a = re.search(r"rho\*_a = (\S+)", choices).group(1)
    provenance = sorted({r["provenance"] for arm in runs.values() for r in arm.values()})
    print(f"Runs from libmgpo/commit {provenance}; choices on validation: lr* = {lr_star}, "
          f"rho* = {rho_star} (look-ahead), rho*_a = {rho_a} (ascent).\n")
    ranks = {s: r for (s, r, _, _) in runs}
    comps = []  # (setting, label, arm, reference arm)
    s1 = [f"look-rho0.05", f"look-rho{rho_star}", "asc-rho0.05", f"asc-rho{rho_a}",
          f"random-rho{rho_star}", f"apnoff-rho{rho_star}", "nlu", "nlg"]
    for arm in dict.fromkeys(s1):
        comps.append(("S1", arm, "adamw"))
    comps.append(("S1", f"random-rho{rho_star}", f"look-rho{rho_star}"))
    comps.append(("S1", f"apnoff-rho{rho_star}", f"look-rho{rho_star}"))
    for arm in dict.fromkeys([f"look-rho{rho_star}", "asc-rho0.05"]):
        comps.append(("S2", arm, "adamw"))
    rows = []
    for setting, arm, ref in comps:
        key_a, key_b = (setting, ranks.get(setting), lr_star, arm), (setting, ranks.get(setting), lr_star, ref)
        if key_a not in runs or key_b not in runs:
            continue
        rows.append((setting, arm, ref, {k: paired(runs[key_a], runs[key_b], k)
                                         for k in ("test_loss", "gap", "max_rebound", "best_eval_loss")}))
    # Holm over the primary measure of every comparison made.
    order = sorted(range(len(rows)), key=lambda i: rows[i][3]["test_loss"]["p"])
    holm, running = [0.0] * len(rows), 0.0
    for rank_i, i in enumerate(order):
        running = max(running, min(1.0, (len(rows) - rank_i) * rows[i][3]["test_loss"]["p"]))
        holm[i] = running
    print("| setting | arm | minus | pairs | Δ final test loss (95 % CI) | p | Holm p | lower in | "
          "Δ gap (95 % CI) | Δ largest rebound (95 % CI) | Δ best validation loss (95 % CI) |")
    print("| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, (setting, arm, ref, r) in enumerate(rows):
        t = r["test_loss"]
        ci = lambda x: f"{x['mean']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}]"
        print(f"| {setting} (r {ranks[setting]}) | {arm} | {ref} | {t['n']} | {ci(t)} | {t['p']:.4f} | {holm[i]:.4f} | "
              f"{t['wins']}/{t['n']} | {ci(r['gap'])} | {ci(r['max_rebound'])} | {ci(r['best_eval_loss'])} |")
    # Exploratory, outside the plan and the Holm family: every MGPO arm run at
    # a learning rate other than lr* (main_grid.sh's EXPLORE), against AdamW
    # at that same lr and seed.
    explore = [(k, runs[(k[0], k[1], k[2], "adamw")]) for k in sorted(runs)
               if k[2] != lr_star and k[3] != "adamw" and (k[0], k[1], k[2], "adamw") in runs]
    if explore:
        print("\nExploratory (not pre-registered, not corrected): arms at a learning rate other than lr*, "
              "minus AdamW at the same lr and seed.\n")
        print("| setting | lr | arm | pairs | Δ final test loss (95 % CI) | p | lower in | Δ gap (95 % CI) | "
              "Δ largest rebound (95 % CI) | Δ best validation loss (95 % CI) |")
        print("| :--- | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (setting, rank, lr, arm), ref in explore:
            r = {k: paired(runs[(setting, rank, lr, arm)], ref, k)
                 for k in ("test_loss", "gap", "max_rebound", "best_eval_loss")}
            t = r["test_loss"]
            if t is None:
                continue
            ci = lambda x: f"{x['mean']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}]"
            print(f"| {setting} (r {rank}) | {lr} | {arm} | {t['n']} | {ci(t)} | {t['p']:.4f} | {t['wins']}/{t['n']} | "
                  f"{ci(r['gap'])} | {ci(r['max_rebound'])} | {ci(r['best_eval_loss'])} |")
    print("\n| setting | arm | runs | final test loss (mean ± sd) | gap | ms/step (median, as the runs ran: not the cost measurement) | vs AdamW | optimizer bytes | vs AdamW |")
    print("| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (setting, rank, lr, arm), seeds in sorted(runs.items()):
        ref = runs.get((setting, rank, lr, "adamw"))
        vals = [r["test_loss"] for r in seeds.values()]
        ms = median(r["step_ms"] for r in seeds.values())
        by = max(r["optimizer_bytes"] for r in seeds.values())
        ms0 = median(r["step_ms"] for r in ref.values()) if ref else float("nan")
        by0 = max(r["optimizer_bytes"] for r in ref.values()) if ref else float("nan")
        sd = stdev(vals) if len(vals) > 1 else 0.0
        print(f"| {setting} r{rank} lr{lr} | {arm} | {len(vals)} | {mean(vals):.4f} ± {sd:.4f} | "
              f"{mean(r['gap'] for r in seeds.values()):+.4f} | {ms:.1f} | {100 * (ms / ms0 - 1):+.1f} % | "
              f"{by:.0f} | {by - by0:+.0f} |")


if __name__ == "__main__":
    main()
