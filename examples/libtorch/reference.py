#!/usr/bin/python3
"""Reference for examples/libtorch/train.cpp, in Python torch (Debian's
python3-torch): the same 2-layer MLP, data and initial parameters, trained
for 50 steps with torch.optim.AdamW and the MGPO perturbation taken from
AdamW's exp_avg as the authors' trainer does it (per-tensor units,
lookahead sign, EMA of the raw gradient norm updated before the optimizer
step), except that the clean parameters are restored from a copy (exact)
instead of by subtraction.  Writes reference.txt next to this script:

    rho <value>
    <tensor name> <count> then one float per line (%.9e), for the MGPO run
    and then the same for the plain AdamW run (rho 0)

Run:  /usr/bin/python3 examples/libtorch/reference.py
"""
import math
import os

import torch

STEPS, N, D_IN, D_HID, D_OUT = 50, 32, 4, 8, 2
LR, WD, RHO, NORM_EMA, SCALE_MAX, NORM_EPS = 1e-2, 1e-2, 0.05, 0.9, 10.0, 1e-12
SIGN = -1.0  # lookahead, libmgpo's default


def value(seed, i):
    """A float in [-1, 1) on a grid of 1/64: exact in float32, in C++ too."""
    return float(((seed * 7919 + i * 104729) % 128) - 64) / 64.0


def tensor(seed, *shape):
    n = math.prod(shape)
    return torch.tensor([value(seed, i) for i in range(n)], dtype=torch.float32).reshape(shape)


def model():
    return [tensor(1, D_HID, D_IN) * 0.5, tensor(2, D_HID) * 0.1,
            tensor(3, D_OUT, D_HID) * 0.5, tensor(4, D_OUT) * 0.1]


def forward(params, x):
    w1, b1, w2, b2 = params
    return torch.tanh(x @ w1.t() + b1) @ w2.t() + b2


def train(rho):
    torch.manual_seed(0)
    params = [p.clone().requires_grad_(True) for p in model()]
    x, y = tensor(5, N, D_IN), tensor(6, N, D_OUT)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)
    gbar = [None] * len(params)
    for _ in range(STEPS):
        clean = [None] * len(params)
        with torch.no_grad():
            for i, p in enumerate(params):
                state = opt.state[p]
                if rho == 0 or "exp_avg" not in state:
                    continue
                m = state["exp_avg"]
                n = math.sqrt(float((m.double() ** 2).sum()))
                if not n > NORM_EPS:
                    continue
                s = 1.0 if gbar[i] is None else min(1.0 / (gbar[i] + NORM_EPS), SCALE_MAX)
                c = SIGN * rho * s / (n + NORM_EPS)
                clean[i] = p.clone()
                p.add_(m * torch.tensor(c, dtype=torch.float32))
        opt.zero_grad()
        loss = ((forward(params, x) - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for i, p in enumerate(params):
                if clean[i] is not None:
                    p.copy_(clean[i])
                gamma = math.sqrt(float((p.grad.double() ** 2).sum()))
                gbar[i] = gamma if gbar[i] is None else NORM_EMA * gbar[i] + (1 - NORM_EMA) * gamma
        opt.step()
    return params


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.txt")
    with open(out, "w") as f:
        f.write(f"rho {RHO!r}\n")
        for rho in (RHO, 0.0):
            for name, p in zip(("w1", "b1", "w2", "b2"), train(rho)):
                flat = p.detach().reshape(-1)
                f.write(f"{name} {flat.numel()}\n")
                for v in flat.tolist():
                    f.write(f"{v:.9e}\n")
    print(f"wrote {out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
