#!/usr/bin/python3
"""Golden data for libmgpo's LoRA pairs in base mode (tests/test_lora.c).

Run with Debian's torch 1.13, which is installed for /usr/bin/python3 only
(the `python3` on PATH may be a pyenv without torch):

    /usr/bin/python3 tests/golden/generate_lora.py

It writes tests/golden/lora_adamw.bin and tests/golden/lora_sgd.bin.

The reference follows the LoRA-MGPO authors' training code: each LoRA layer is
its own scope unit (per-layer scope), the direction is measured in weight
space, D = s*(m_B @ A + B @ m_A), the frozen base weight W is moved by
c*D with c = -rho * min(1/(gbar + 1e-12), 10) / (||D|| + 1e-12) (lookahead
sign, clamp 10) and restored after the backward pass, and gbar is an EMA of
||s*(g_B @ A + B @ g_A)|| initialised with its first value.  The base
optimizer is torch.optim.AdamW / torch.optim.SGD over the A and B matrices.

The model is a chain of two LoRA linear layers, y = W2_eff (W1_eff x) with
W_eff = W + s*B*A, trained on a fixed batch with loss 0.5/N * ||y - t||^2.
Its gradient depends on the perturbed W, so the perturbation steers the
trajectory.  The gradient is computed from the float32 parameters in float64
and rounded to float32: test_lora.c does the same in C, so both sides feed
the optimizer the same float32 gradients (to the last bit almost always) and
the comparison measures the optimizer, not matmul summation order.

File layout (little-endian):
    8 bytes  magic b"MGPOLORA"
    u32      format version (1)
    u32      optimizer (0 AdamW, 1 SGD)
    u32      steps, n0, n1, n2, r1, r2, batch
    f64      lr, beta1, beta2, eps, weight_decay, momentum, rho, norm_ema,
             scale_max, norm_eps, s1, s2
    f32      X (batch x n0), T (batch x n2)
    f32      initial A1, B1, W1, A2, B2, W2   (row-major)
    f32      final   A1, B1, W1, A2, B2, W2
    f64      per step and layer: gamma[steps][2], coefficient[steps][2]
             (coefficient of the perturbation applied before that step's
             forward pass; 0 when none)
"""
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

STEPS = 12
N0, N1, N2 = 7, 5, 3      # input, hidden, output widths (non-square layers)
R1, R2 = 2, 3             # LoRA ranks
BATCH = 9
ALPHA1, ALPHA2 = 4.0, 3.0
NORM_EPS = 1e-12
SCALE_MAX = 10.0


def forward_grads(params, X, T, s):
    """Float32 gradients of A and B of both layers at the given weights."""
    A1, B1, W1, A2, B2, W2 = [p.double() for p in params]
    Xd, Td = X.double(), T.double()
    W1e = W1 + s[0] * (B1 @ A1)
    W2e = W2 + s[1] * (B2 @ A2)
    H = Xd @ W1e.T
    E = H @ W2e.T - Td
    n = X.shape[0]
    G2 = E.T @ H / n
    G1 = (E @ W2e).T @ Xd / n
    gA1, gB1 = s[0] * (B1.T @ G1), s[0] * (G1 @ A1.T)
    gA2, gB2 = s[1] * (B2.T @ G2), s[1] * (G2 @ A2.T)
    return [g.float() for g in (gA1, gB1, gA2, gB2)]


def run(optimizer, lr, beta1, beta2, eps, wd, momentum, rho, ema, seed, data_scale):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float()

    X = randn(BATCH, N0, scale=data_scale)
    T = randn(BATCH, N2, scale=data_scale)
    init = [randn(R1, N0, scale=0.3), randn(N1, R1, scale=0.3), randn(N1, N0, scale=0.3),
            randn(R2, N1, scale=0.3), randn(N2, R2, scale=0.3), randn(N2, N1, scale=0.3)]
    s = (ALPHA1 / R1, ALPHA2 / R2)

    A1, B1, W1, A2, B2, W2 = [p.clone() for p in init]
    layers = [(A1, B1, W1, s[0]), (A2, B2, W2, s[1])]
    trained = [A1, B1, A2, B2]
    if optimizer == 0:
        opt = torch.optim.AdamW(trained, lr=lr, betas=(beta1, beta2), eps=eps,
                                weight_decay=wd, foreach=False)
        moment = "exp_avg"
    else:
        opt = torch.optim.SGD(trained, lr=lr, momentum=momentum, weight_decay=wd,
                              foreach=False)
        moment = "momentum_buffer"

    gbar = [None, None]
    gammas, coefs, clamped = [], [], 0
    for t in range(STEPS):
        # Perturb the frozen W of each layer along its weight-space momentum.
        backups, step_coefs = [], [0.0, 0.0]
        if t > 0 and rho > 0:
            for li, (A, B, W, sc) in enumerate(layers):
                mA, mB = opt.state[A][moment], opt.state[B][moment]
                D = sc * (mB @ A + B @ mA)
                n = D.norm().item()
                scale = min(1.0 / (gbar[li] + NORM_EPS), SCALE_MAX)
                clamped += scale == SCALE_MAX
                if n > NORM_EPS:
                    c = -rho * scale / (n + NORM_EPS)
                    backups.append((W, W.clone()))
                    W.add_(D, alpha=c)
                    step_coefs[li] = c
        grads = forward_grads([A1, B1, W1, A2, B2, W2], X, T, s)
        for W, backup in backups:
            W.copy_(backup)
        # Gradient norms in weight space, EMA initialised with the first value.
        step_gammas = []
        for li, (A, B, W, sc) in enumerate(layers):
            gA, gB = grads[2 * li], grads[2 * li + 1]
            gamma = (sc * (gB @ A + B @ gA)).norm().item()
            gbar[li] = gamma if gbar[li] is None else ema * gbar[li] + (1 - ema) * gamma
            step_gammas.append(gamma)
        for p, gr in zip(trained, grads):
            p.grad = gr.clone()
        opt.step()
        gammas.append(step_gammas)
        coefs.append(step_coefs)

    final = [A1, B1, W1, A2, B2, W2]
    return X, T, s, init, final, gammas, coefs, clamped


def write(path, optimizer, lr, beta1, beta2, eps, wd, momentum, rho, ema, seed, data_scale):
    X, T, s, init, final, gammas, coefs, clamped = run(optimizer, lr, beta1, beta2, eps, wd,
                                                 momentum, rho, ema, seed, data_scale)
    with open(path, "wb") as f:
        f.write(b"MGPOLORA")
        f.write(struct.pack("<9I", 1, optimizer, STEPS, N0, N1, N2, R1, R2, BATCH))
        f.write(struct.pack("<12d", lr, beta1, beta2, eps, wd, momentum, rho, ema,
                            SCALE_MAX, NORM_EPS, s[0], s[1]))
        for arr in [X, T] + init + final:
            f.write(arr.contiguous().numpy().astype("<f4").tobytes())
        for row in gammas:
            f.write(struct.pack("<2d", *row))
        for row in coefs:
            f.write(struct.pack("<2d", *row))
    print(f"{os.path.basename(path)}: gamma first {gammas[0]} last {gammas[-1]}, "
          f"last coefficients {coefs[-1]}, perturbations clamped at s_max: {clamped} "
          f"of {2 * (STEPS - 1)}")


def main():
    # AdamW as in the paper's nlu profile (betas 0.9/0.999, eps 1e-8), a
    # larger lr and a little decay so a dozen steps move the weights.
    write(os.path.join(HERE, "lora_adamw.bin"), 0, lr=0.01, beta1=0.9, beta2=0.999,
          eps=1e-8, wd=0.01, momentum=0.0, rho=0.05, ema=0.9, seed=1234, data_scale=0.12)
    write(os.path.join(HERE, "lora_sgd.bin"), 1, lr=0.05, beta1=0.0, beta2=0.0,
          eps=0.0, wd=0.01, momentum=0.9, rho=0.05, ema=0.9, seed=4321, data_scale=0.3)


if __name__ == "__main__":
    main()
