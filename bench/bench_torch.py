#!/usr/bin/python3
"""The MGPO iteration of bench_step, written in PyTorch, for comparison.

One iteration is what a torch user would write around torch.optim.AdamW
(torch_mgpo_iteration: the default implementation, which in torch 1.13 on CPU
is the single-tensor loop; torch_mgpo_foreach: foreach=True):
perturb (norm of exp_avg, backup copy, p += c * exp_avg), restore (copy the
backup back), the gradient norm and its EMA (which also catches NaN/Inf), and
opt.step().  Same hyper-parameters as bench_step (lr 1e-3, betas 0.9/0.999,
eps 1e-8, weight decay 0, rho 0.05), same sizes, same thread count
(torch.set_num_threads).

    /usr/bin/python3 bench/bench_torch.py [--sizes 16M,64M] [--threads 1,2]
        [--reps 5] [--compare bench_step_output.txt] [--short]

Needs torch (Debian's python3-torch is installed for /usr/bin/python3 only).
--compare reads the table printed by bench_step and prints torch's time over
libmgpo's for the MGPO iteration (target: at least 4).
"""
import argparse
import math
import re
import sys
import time

try:
    import torch
except ImportError:
    print("bench_torch: torch is not importable; nothing to do")
    sys.exit(0)

LR, BETA1, BETA2, EPS, RHO = 1e-3, 0.9, 0.999, 1e-8, 0.05
NORM_EMA, NORM_EPS, SCALE_MAX = 0.9, 1e-12, 10.0


def parse_size(text):
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


class TorchMgpo:
    """One tensor trained by torch.optim.AdamW with MGPO around it."""

    def __init__(self, n, foreach=None):
        gen = torch.Generator().manual_seed(1)
        self.p = torch.nn.Parameter(torch.rand(n, generator=gen) * 2 - 1)
        self.p.grad = (torch.rand(n, generator=gen) * 2 - 1) * 1e-2
        self.opt = torch.optim.AdamW([self.p], lr=LR, betas=(BETA1, BETA2), eps=EPS,
                                     weight_decay=0.0, foreach=foreach)
        self.backup = torch.empty_like(self.p)
        self.gbar = None

    def adamw_step(self):
        self.opt.step()

    def mgpo_iteration(self):
        p = self.p
        with torch.no_grad():
            state = self.opt.state[p]
            perturbed = False
            if state:
                m = state["exp_avg"]
                norm = torch.linalg.vector_norm(m).item()
                if math.isfinite(norm) and norm > NORM_EPS:
                    scale = 1.0 if self.gbar is None else min(1.0 / (self.gbar + NORM_EPS),
                                                              SCALE_MAX)
                    self.backup.copy_(p)
                    p.add_(m, alpha=-RHO * scale / (norm + NORM_EPS))
                    perturbed = True
            # (the caller's forward and backward passes run here)
            if perturbed:
                p.copy_(self.backup)
            gamma = torch.linalg.vector_norm(p.grad).item()
            if not math.isfinite(gamma):
                return
            self.gbar = gamma if self.gbar is None else (
                NORM_EMA * self.gbar + (1 - NORM_EMA) * gamma)
        self.opt.step()


WARMUP = 3  # as bench_step: the first call allocates AdamW's state, and fresh
            # memory is slow for its first passes


def best_time(fn, reps):
    for _ in range(WARMUP):
        fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def read_bench_step(path):
    """{(N, threads): ns/param} of the mgpo_iteration rows of bench_step."""
    rows = {}
    pattern = re.compile(r"^\s*(\d+)\s+(\d+)\s+mgpo_iteration\s+\S+\s+([0-9.]+)")
    with open(path) as f:
        for line in f:
            match = pattern.match(line)
            if match:
                rows[(int(match.group(1)), int(match.group(2)))] = float(match.group(3))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16M,64M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compare", help="a file holding bench_step's output")
    ap.add_argument("--short", action="store_true", help="tiny size, for ctest")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    reps = args.reps
    if args.short:
        sizes, threads, reps = [3 * 4096 + 5], [1], 2

    print(f"bench_torch: torch {torch.__version__}, best of {reps} runs after a warm-up"
          + (" (--short: timings meaningless)" if args.short else ""))
    probe = TorchMgpo(16)
    print(f"torch.optim.AdamW defaults: foreach={probe.opt.defaults.get('foreach')}, "
          f"maximize={probe.opt.defaults.get('maximize')}, "
          f"capturable={probe.opt.defaults.get('capturable')}")
    del probe
    print(f"{'N':>10} {'thr':>3}  {'case':<24} {'ns/param':>9}")
    results = {}
    for n in sizes:
        for t in threads:
            torch.set_num_threads(t)
            for case in ("torch_adamw_step", "torch_mgpo_iteration", "torch_mgpo_foreach"):
                model = TorchMgpo(n, foreach=True if case == "torch_mgpo_foreach" else None)
                fn = model.adamw_step if case == "torch_adamw_step" else model.mgpo_iteration
                ns = best_time(fn, reps) * 1e9 / n
                results[(n, t, case)] = ns
                print(f"{n:>10} {t:>3}  {case:<24} {ns:>9.3f}", flush=True)
                del model

    if args.compare:
        ours = read_bench_step(args.compare)
        print("\ntorch MGPO iteration / libmgpo MGPO iteration (target >= 4):")
        for (n, t, case), ns in sorted(results.items()):
            if case == "torch_adamw_step" or (n, t) not in ours:
                continue
            ratio = ns / ours[(n, t)]
            print(f"  {case:<22} N = {n}, {t} thread{'s' if t > 1 else ''}: {ratio:.2f}  "
                  f"{'met' if ratio >= 4 else 'NOT met'}")


if __name__ == "__main__":
    main()
