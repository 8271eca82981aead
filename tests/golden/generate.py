#!/usr/bin/env python3
"""Generate the golden files that tests/test_golden.c checks libmgpo against.

Usage (needs Debian's python3-torch, i.e. torch 1.13 for the system python):

    /usr/bin/python3 tests/golden/generate.py [--outdir DIR] [--check]

Every case is run in float32 with PyTorch on the CPU:

* rho = 0 cases use torch.optim.AdamW / torch.optim.SGD themselves, with one
  parameter group per tensor (lr_scale and weight_decay_scale become the
  group's lr and weight_decay) and torch.nn.utils.clip_grad_norm_ for
  clipping.
* rho > 0 cases wrap the same torch optimizers in MGPO written in torch
  operations, following the numerical contract (shared/mgpo-spec.md) line by
  line: perturb along the raw first moment, compute the gradient at the
  perturbed parameters, restore bit-exactly, update the gradient-norm EMA on
  the raw gradient, clip, step.

The "loss" is a separable quadratic plus deterministic noise whose gradient
C can reproduce bit for bit from the same (perturbed) parameters:

    g_i = a_i * (p_i - c_i) + noise(seed, t, k, i)

computed in float32 as (p - c), then a * that, then + noise, each rounded
once.  noise is an integer hash mapped to an exactly representable float, so
both sides get identical bits for identical parameters (see README.md).

--check additionally runs a plain numpy float32 re-implementation of the spec
(no fused multiply-adds, i.e. roughly what portable C does) and prints how far
it lands from torch, which is a preview of the tolerance the C test needs.

Output: one <case>.bin per case (format in README.md).  Everything is
deterministic: the same torch build writes the same bytes.
"""

import argparse
import math
import os
import struct
import sys
from dataclasses import dataclass, field, replace
from typing import List, Optional

import numpy as np
import torch

FORMAT_VERSION = 2
MAGIC = b"MGPOGOLD"
END_MAGIC = b"MGPO_END"

FLAG_HAS_M = 1
FLAG_HAS_V = 2
FLAG_HAS_THETA_TILDE = 4
FLAG_CLAMP_HIT = 8

M32 = 0xFFFFFFFF

# The tolerance of tests/test_golden.c; --check uses it to preview margins.
RTOL = 1e-6
ATOL = 1e-7


# ---------------------------------------------------------------------------
# Deterministic noise, identical in C (tests/test_golden.c: golden_mix32).


def mix32(x):
    """lowbias32 (C. Wellons): a 32-bit bijective integer hash.

    Works on Python ints and on numpy uint64 arrays (values kept < 2^32, so
    the 32x32-bit products fit in 64 bits before masking)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & M32
    x = x ^ (x >> 16)
    return x


def noise_shift(case, k, t):
    """Noise amplitude exponent of tensor k at step t: the noise halves every
    noise_halving steps, so gradients shrink as training converges."""
    shift = case.tensors[k].noise_shift
    if case.noise_halving > 0:
        shift += t // case.noise_halving
    return shift


def noise(case, t, k, count):
    """noise_i = ((h >> 8) * 2^-24 - 0.5) * 2^-shift, h = hash(seed, t, k, i).

    (h >> 8) has 24 bits, so every intermediate is exact in float32 (and in
    double): the value does not depend on how either side evaluates it."""
    key = mix32(k ^ mix32(t ^ mix32(case.seed)))
    i = np.arange(count, dtype=np.uint64)
    h = mix32(i ^ np.uint64(key))
    shift = noise_shift(case, k, t)
    val = ((h >> np.uint64(8)).astype(np.float64) * 2.0 ** -24 - 0.5) * 2.0 ** -shift
    out = val.astype(np.float32)
    assert np.array_equal(out.astype(np.float64), val), "noise not exact"
    return out


# ---------------------------------------------------------------------------
# The random direction (MGPO_DIRECTION_RANDOM): the counter-based Gaussian
# generator of lib/random.c, implemented again from its spec.

M64 = 0xFFFFFFFFFFFFFFFF
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def mix64(x):
    """splitmix64's finaliser on a Python int mod 2^64."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def absorb(h, x):
    return mix64(h ^ mix64((x + GOLDEN_GAMMA) & M64))


def gaussian_direction(seed, step, slot, count):
    """z_i for i < count: the key (seed, completed steps, slot index, i);
    double arithmetic with Python's math (the platform libm), then float32."""
    key = absorb(absorb(mix64((seed + GOLDEN_GAMMA) & M64), step), slot)
    out = np.empty(count, dtype=np.float32)
    for i in range(count):
        h = absorb(key, i)
        u1 = ((h >> 32) + 0.5) * 2.0 ** -32
        u2 = ((h & 0xFFFFFFFF) + 0.5) * 2.0 ** -32
        out[i] = math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)
    return out


def directions(case, t, m_list, coefs, rec):
    """The vectors the perturbation adds (times the coefficient returned
    alongside): m itself, or for the random direction z with the unit's
    coefficient rescaled to c_U * n_U / ||z_U||, so that ||c' z|| = ||c m||."""
    if case.direction == "momentum":
        return m_list, coefs
    z = [gaussian_direction(case.rseed, t, k, ts.count) if ts.perturb else None
         for k, ts in enumerate(case.tensors)]
    scaled = list(coefs)
    for u, members in enumerate(units_of(case)):
        if not members or coefs[u] == 0.0:
            continue
        zn = norm64([z[k] for k in members])
        scaled[u] = coefs[u] * rec.momentum_norm[t, u] / zn
        rec.coef[t, u] = scaled[u]
    return z, scaled


def gradient_torch(a, c, p, nz):
    """g = a * (p - c) + noise in float32, one rounding per operation, in the
    order the C test uses.  Separate kernels, so no fused multiply-add."""
    diff = torch.sub(p, c)
    prod = torch.mul(a, diff)
    return torch.add(prod, nz)


def gradient_numpy(a, c, p, nz):
    return (a * (p - c)) + nz  # float32 arrays: one rounding per operation


# ---------------------------------------------------------------------------
# Case definitions.


@dataclass
class TensorSpec:
    count: int
    lr_scale: float = 1.0
    weight_decay_scale: float = 1.0
    perturb: bool = True
    noise_shift: int = 8  # noise amplitude 2^-shift at t = 0


def default_tensors():
    # Odd sizes on purpose (1, 7: scalar tails; 1000, 4097: not a multiple of
    # any vector width).  Tensor 1 gets a LoRA+-like larger lr, tensor 0 is a
    # "bias" without weight decay.
    return [
        TensorSpec(1, weight_decay_scale=0.0, noise_shift=7),
        TensorSpec(7, lr_scale=4.0, noise_shift=8),
        TensorSpec(1000, noise_shift=9),
        TensorSpec(4097, noise_shift=10),
    ]


@dataclass
class Case:
    name: str
    optimizer: str  # "adamw" | "sgd"
    lr: float
    schedule: str = "constant"  # "constant" | "warmup_cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    rho: float = 0.0
    norm_ema: float = 0.9
    scale_max: float = 10.0
    norm_eps: float = 1e-12
    sign: int = -1  # -1 lookahead, +1 ascent
    scope: str = "global"  # "global" | "tensor"
    max_grad_norm: float = 0.0
    steps: int = 60
    seed: int = 1
    noise_halving: int = 0
    init_scale: float = 0.05  # std of p0 - c
    # std of c, the optimum.  Small on purpose: near convergence the gradient
    # a * (p - c) is a difference of nearly equal numbers, so one float32 ulp
    # of p becomes a large relative error of g (and of m); small |p| keeps
    # that ulp, and the tolerance the C test needs, small.
    c_scale: float = 0.01
    a_range: tuple = (0.25, 1.0)
    tensors: List[TensorSpec] = field(default_factory=default_tensors)
    normalize: bool = True  # False: APN off, s = 1
    direction: str = "momentum"  # "momentum" | "random"
    rseed: int = 0  # key of the random direction


# Shared by the MGPO cases: longer runs that start near the optimum.
MGPO = dict(steps=80, init_scale=0.01, noise_halving=20)


def mgpo_tensors(disabled=None):
    ts = default_tensors()
    if disabled is not None:
        ts[disabled] = replace(ts[disabled], perturb=False)
    return ts


CASES = [
    # --- plain AdamW (rho = 0) against torch.optim.AdamW -------------------
    Case("adamw_default", "adamw", lr=1e-3, seed=11),
    Case("adamw_decay", "adamw", lr=2e-3, beta1=0.8, beta2=0.99, eps=1e-6,
         weight_decay=0.01, seed=12),
    Case("adamw_betas", "adamw", lr=5e-3, beta1=0.5, beta2=0.9, eps=1e-3,
         weight_decay=0.1, seed=13),
    # Clipping active early (large initial gradient), inactive later.
    Case("adamw_clip", "adamw", lr=3e-3, weight_decay=0.01, max_grad_norm=0.5,
         init_scale=0.02, seed=14),
    # Paper-style schedule: linear warm-up, cosine decay (lr 0 at step 0).
    Case("adamw_cosine", "adamw", lr=1e-2, schedule="warmup_cosine",
         warmup_steps=6, weight_decay=0.01, seed=15),
    # --- plain SGD (rho = 0) against torch.optim.SGD ------------------------
    Case("sgd_momentum", "sgd", lr=0.1, momentum=0.9, seed=21),
    Case("sgd_dampening", "sgd", lr=0.1, momentum=0.9, dampening=0.5, seed=22),
    Case("sgd_nesterov", "sgd", lr=0.1, momentum=0.9, nesterov=True,
         weight_decay=1e-3, seed=23),
    Case("sgd_decay", "sgd", lr=0.2, momentum=0.8, weight_decay=0.05, seed=24),
    Case("sgd_no_momentum", "sgd", lr=0.5, momentum=0.0, weight_decay=0.01,
         seed=25),
    Case("sgd_clip_cosine", "sgd", lr=0.2, momentum=0.9, weight_decay=1e-3,
         max_grad_norm=0.5, schedule="warmup_cosine", warmup_steps=5,
         min_lr=0.01, seed=26),
    # --- MGPO: sign x scope x optimizer -------------------------------------
    # Parameters start close to the optimum and the noise decays, so the
    # gradient-norm EMA falls below 1/s_max and the clamp s_max is hit; rho
    # is small enough that a clamped perturbation (norm rho * s_max) does not
    # by itself keep the gradient norm above 1/s_max.
    Case("mgpo_adamw_lookahead_global", "adamw", lr=1e-3, rho=0.003,
         sign=-1, scope="global", weight_decay=0.01, seed=31, **MGPO),
    Case("mgpo_adamw_ascent_global", "adamw", lr=1e-3, rho=0.003, sign=+1,
         scope="global", tensors=mgpo_tensors(disabled=0), max_grad_norm=0.2,
         seed=32, **dict(MGPO, init_scale=0.02)),
    Case("mgpo_adamw_lookahead_tensor", "adamw", lr=1e-3, rho=0.005, sign=-1,
         scope="tensor", tensors=mgpo_tensors(disabled=2), beta1=0.8,
         norm_ema=0.8, schedule="warmup_cosine", warmup_steps=4, seed=33,
         **MGPO),
    Case("mgpo_adamw_ascent_tensor", "adamw", lr=1e-3, rho=0.005, sign=+1,
         scope="tensor", weight_decay=0.01, seed=34, **MGPO),
    Case("mgpo_sgd_lookahead_global", "sgd", lr=0.1, momentum=0.9, rho=0.003,
         sign=-1, scope="global", tensors=mgpo_tensors(disabled=1), seed=41,
         **MGPO),
    Case("mgpo_sgd_ascent_global", "sgd", lr=0.1, momentum=0.9, dampening=0.1,
         weight_decay=1e-3, rho=0.003, sign=+1, scope="global", seed=42,
         **MGPO),
    Case("mgpo_sgd_lookahead_tensor", "sgd", lr=0.1, momentum=0.9,
         nesterov=True, rho=0.005, sign=-1, scope="tensor",
         tensors=mgpo_tensors(disabled=3), max_grad_norm=0.2, seed=43,
         **dict(MGPO, init_scale=0.02)),
    Case("mgpo_sgd_ascent_tensor", "sgd", lr=0.1, momentum=0.8, rho=0.005,
         sign=+1, scope="tensor", weight_decay=0.01, norm_ema=0.8,
         schedule="warmup_cosine", warmup_steps=3, seed=44, **MGPO),
    # --- Ablations (docs/algorithm.md) ---------------------------------------
    # APN off: s = 1, the perturbation has norm rho whatever the gradients.
    Case("mgpo_adamw_apn_off_global", "adamw", lr=1e-3, rho=0.02, sign=-1,
         scope="global", normalize=False, weight_decay=0.01, seed=51, **MGPO),
    Case("mgpo_sgd_apn_off_tensor", "sgd", lr=0.1, momentum=0.9, rho=0.02,
         sign=+1, scope="tensor", normalize=False,
         tensors=mgpo_tensors(disabled=1), seed=52, **MGPO),
    # Random direction of the momentum perturbation's norm (Table 4).
    Case("mgpo_adamw_random_global", "adamw", lr=1e-3, rho=0.003, sign=-1,
         scope="global", direction="random", rseed=7,
         tensors=mgpo_tensors(disabled=2), seed=53, **MGPO),
    Case("mgpo_sgd_random_tensor", "sgd", lr=0.1, momentum=0.9, rho=0.005,
         sign=+1, scope="tensor", direction="random", rseed=12345678901234567891,
         max_grad_norm=0.2, seed=54, **dict(MGPO, init_scale=0.02)),
    Case("mgpo_adamw_random_apn_off_tensor", "adamw", lr=1e-3, rho=0.02,
         sign=-1, scope="tensor", direction="random", normalize=False,
         rseed=99, seed=55, **MGPO),
]


def lr_schedule(case):
    """lr for each 0-based step; stored in the file, so C only reads it."""
    lrs = []
    for t in range(case.steps):
        if case.schedule == "constant":
            lr = case.lr
        elif t < case.warmup_steps:
            lr = case.lr * t / max(1, case.warmup_steps)
        else:
            progress = (t - case.warmup_steps) / max(1, case.steps - case.warmup_steps)
            lr = max(case.min_lr, case.lr * 0.5 * (1.0 + math.cos(math.pi * progress)))
        lrs.append(float(lr))
    return lrs


def init_arrays(case):
    rng = np.random.default_rng(case.seed)
    p0, a, c = [], [], []
    for ts in case.tensors:
        ck = rng.normal(0.0, case.c_scale, ts.count).astype(np.float32)
        ak = rng.uniform(case.a_range[0], case.a_range[1], ts.count).astype(np.float32)
        pk = (ck.astype(np.float64) + rng.normal(0.0, case.init_scale, ts.count)).astype(np.float32)
        p0.append(pk)
        a.append(ak)
        c.append(ck)
    return p0, a, c


def units_of(case):
    """Tensor indices of every scope unit (an empty list = all-zero unit)."""
    enabled = [k for k, ts in enumerate(case.tensors) if ts.perturb]
    if case.scope == "global":
        return [enabled]
    return [[k] if case.tensors[k].perturb else [] for k in range(len(case.tensors))]


def norm64(arrays):
    """L2 norm accumulated in double, as the library does."""
    s = 0.0
    for x in arrays:
        x64 = np.asarray(x, dtype=np.float64)
        s += float(np.dot(x64, x64))
    return math.sqrt(s)


# ---------------------------------------------------------------------------
# MGPO bookkeeping shared by the torch run and the numpy self-check.


class Recorder:
    def __init__(self, case):
        T, U = case.steps, len(units_of(case))
        self.grad_norm = np.zeros(T)
        self.clipped = np.zeros(T, dtype=np.uint32)
        self.momentum_norm = np.zeros((T, U))
        self.scale = np.zeros((T, U))
        self.coef = np.zeros((T, U))
        self.unit_grad_norm = np.zeros((T, U))
        self.gbar = np.zeros((T, U))
        self.clamped = np.zeros((T, U), dtype=np.uint32)
        self.theta_tilde = None
        self.min_clamp_margin = math.inf  # |1/(gbar+eps) - s_max| / s_max
        self.min_clip_margin = math.inf  # |norm - max_norm| / max_norm


def perturb_coefficients(case, t, m_list, gbar, rec):
    """c_U for every unit at step t (before the forward pass), or None when
    the perturbation is skipped (t = 0 or rho = 0)."""
    if t == 0 or case.rho == 0.0:
        return None
    coefs = []
    for u, members in enumerate(units_of(case)):
        if not members:
            coefs.append(0.0)
            continue
        n = norm64([m_list[k] for k in members])
        if not (n > case.norm_eps and math.isfinite(n)):
            coefs.append(0.0)
            continue
        raw = 1.0 / (gbar[u] + case.norm_eps)
        s = min(raw, case.scale_max) if case.normalize else 1.0
        c = case.sign * case.rho * s / (n + case.norm_eps)
        rec.momentum_norm[t, u] = n
        rec.scale[t, u] = s
        rec.coef[t, u] = c
        if case.normalize:
            rec.clamped[t, u] = raw > case.scale_max
            rec.min_clamp_margin = min(rec.min_clamp_margin,
                                       abs(raw - case.scale_max) / case.scale_max)
        coefs.append(c)
    return coefs


def update_gbar(case, t, g_list, gbar, rec):
    rec.grad_norm[t] = norm64(g_list)
    for u, members in enumerate(units_of(case)):
        if not members:
            continue
        gamma = norm64([g_list[k] for k in members])
        gbar[u] = gamma if t == 0 else case.norm_ema * gbar[u] + (1.0 - case.norm_ema) * gamma
        rec.unit_grad_norm[t, u] = gamma
        rec.gbar[t, u] = gbar[u]


# ---------------------------------------------------------------------------
# The reference: torch.optim + MGPO in torch operations.


def clip_gradients(case, t, params, rec):
    """torch.nn.utils.clip_grad_norm_ on the params' .grad when the case
    clips; records whether it clipped and how close to the threshold."""
    if case.max_grad_norm > 0.0:
        total = float(torch.nn.utils.clip_grad_norm_(params, case.max_grad_norm))
        rec.clipped[t] = total + 1e-6 > case.max_grad_norm
        rec.min_clip_margin = min(rec.min_clip_margin,
                                  abs(total - case.max_grad_norm) / case.max_grad_norm)


def make_optimizer(case, params):
    """torch.optim.AdamW / SGD over params, one parameter group per tensor
    (lr_scale and weight_decay_scale become the group's lr and weight
    decay), and moment(p, which): its exp_avg (0) / exp_avg_sq (1), or
    momentum_buffer (0), None before the first step."""
    groups = [{"params": [p], "lr": case.lr * ts.lr_scale,
               "weight_decay": case.weight_decay * ts.weight_decay_scale}
              for p, ts in zip(params, case.tensors)]
    if case.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=case.lr, betas=(case.beta1, case.beta2),
                                eps=case.eps, weight_decay=case.weight_decay,
                                amsgrad=False, maximize=False, foreach=False)
    else:
        opt = torch.optim.SGD(groups, lr=case.lr, momentum=case.momentum,
                              dampening=case.dampening, weight_decay=case.weight_decay,
                              nesterov=case.nesterov, maximize=False, foreach=False)

    def moment(p, which):
        st = opt.state.get(p, {})
        if case.optimizer == "adamw":
            return st.get("exp_avg" if which == 0 else "exp_avg_sq")
        return st.get("momentum_buffer") if which == 0 else None

    return opt, moment


def run_torch(case, rho=None):
    if rho is not None:
        case = replace(case, rho=rho)
    p0, a, c = init_arrays(case)
    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in p0]
    a_t = [torch.from_numpy(x) for x in a]
    c_t = [torch.from_numpy(x) for x in c]
    opt, moment = make_optimizer(case, params)
    lrs = lr_schedule(case)
    rec = Recorder(case)
    gbar = [0.0] * len(units_of(case))
    with torch.no_grad():
        for t in range(case.steps):
            # perturb: theta~ = theta + c_U * m (raw exp_avg / momentum buffer)
            m_list = [moment(p, 0) for p in params]
            coefs = None
            if t > 0 and case.rho > 0.0:
                coefs = perturb_coefficients(case, t, [m.numpy() for m in m_list], gbar, rec)
            backups = None
            if coefs is not None:
                backups = [p.detach().clone() for p in params]
                dirs, coefs = directions(case, t, [m.numpy() for m in m_list], coefs, rec)
                for u, members in enumerate(units_of(case)):
                    for k in members:
                        params[k].add_(torch.from_numpy(np.asarray(dirs[k])), alpha=coefs[u])
            if t == case.steps - 1 and case.rho > 0.0:
                rec.theta_tilde = [p.detach().numpy().copy() for p in params]

            # forward/backward at the perturbed point
            grads = [gradient_torch(a_t[k], c_t[k], params[k],
                                    torch.from_numpy(noise(case, t, k, ts.count)))
                     for k, ts in enumerate(case.tensors)]
            if t == 0:
                grad0 = [g.numpy().copy() for g in grads]
                # Same bits as plain float32 arithmetic (what C does).
                for k in range(len(grads)):
                    ref = gradient_numpy(a[k], c[k], p0[k], noise(case, 0, k, case.tensors[k].count))
                    assert np.array_equal(grad0[k].view(np.uint32), ref.view(np.uint32))

            # restore (bit-exact copy back)
            if backups is not None:
                for p, b in zip(params, backups):
                    p.copy_(b)

            # gradient-norm EMA on the raw gradient, then clipping
            update_gbar(case, t, [g.numpy() for g in grads], gbar, rec)
            for p, g in zip(params, grads):
                p.grad = g.clone()
            clip_gradients(case, t, params, rec)

            # base step on the clean parameters
            for grp, ts in zip(opt.param_groups, case.tensors):
                grp["lr"] = lrs[t] * ts.lr_scale
            opt.step()

    has_m = case.optimizer == "adamw" or case.momentum != 0.0
    result = {
        "params": [p.detach().numpy().copy() for p in params],
        "m": [moment(p, 0).numpy().copy() for p in params] if has_m else None,
        "v": [moment(p, 1).numpy().copy() for p in params] if case.optimizer == "adamw" else None,
        "rec": rec,
        "lrs": lrs,
        "init": (p0, a, c),
        "grad0": grad0,
    }
    return result


# ---------------------------------------------------------------------------
# Independent numpy float32 implementation of the spec (for --check only).


def run_numpy(case):
    f32 = np.float32
    p0, a, c = init_arrays(case)
    p = [x.copy() for x in p0]
    n_t = len(p)
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    lrs = lr_schedule(case)
    rec = Recorder(case)
    gbar = [0.0] * len(units_of(case))
    for t in range(case.steps):
        coefs = perturb_coefficients(case, t, m, gbar, rec) if t > 0 else None
        backups = None
        if coefs is not None:
            backups = [x.copy() for x in p]
            dirs, coefs = directions(case, t, m, coefs, rec)
            for u, members in enumerate(units_of(case)):
                for k in members:
                    p[k] = p[k] + f32(coefs[u]) * dirs[k]
        if t == case.steps - 1 and case.rho > 0.0:
            rec.theta_tilde = [x.copy() for x in p]
        g = [gradient_numpy(a[k], c[k], p[k], noise(case, t, k, case.tensors[k].count))
             for k in range(n_t)]
        if backups is not None:
            p = backups
        update_gbar(case, t, g, gbar, rec)
        if case.max_grad_norm > 0.0:
            total = norm64(g)
            if total > case.max_grad_norm:
                coef = f32(case.max_grad_norm / (total + 1e-6))
                g = [x * coef for x in g]
        step = t + 1
        for k, ts in enumerate(case.tensors):
            lr = lrs[t] * ts.lr_scale
            wd = case.weight_decay * ts.weight_decay_scale
            if case.optimizer == "adamw":
                p[k] = p[k] * f32(1.0 - lr * wd)
                m[k] = f32(case.beta1) * m[k] + f32(1.0 - case.beta1) * g[k]
                v[k] = f32(case.beta2) * v[k] + f32(1.0 - case.beta2) * (g[k] * g[k])
                bc1 = 1.0 - case.beta1 ** step
                bc2 = 1.0 - case.beta2 ** step
                denom = np.sqrt(v[k]) / f32(math.sqrt(bc2)) + f32(case.eps)
                p[k] = p[k] - f32(lr / bc1) * (m[k] / denom)
            else:
                gp = g[k] + f32(wd) * p[k]
                if case.momentum != 0.0:
                    m[k] = gp.copy() if step == 1 else \
                        f32(case.momentum) * m[k] + f32(1.0 - case.dampening) * gp
                    d = gp + f32(case.momentum) * m[k] if case.nesterov else m[k]
                else:
                    d = gp
                p[k] = p[k] - f32(lr) * d
    return {"params": p, "m": m, "v": v, "rec": rec}


def tolerance_usage(got, want):
    """max |got - want| / (RTOL |want| + ATOL) (<= 1 passes), max abs, max rel."""
    got = np.concatenate([np.asarray(x, np.float64) for x in got])
    want = np.concatenate([np.asarray(x, np.float64) for x in want])
    err = np.abs(got - want)
    nz = want != 0
    rel = float(np.max(err[nz] / np.abs(want[nz]))) if nz.any() else 0.0
    return float(np.max(err / (RTOL * np.abs(want) + ATOL))), float(err.max()), rel


# ---------------------------------------------------------------------------
# Binary writer (format: README.md).


def fnv1a64(x):
    """FNV-1a over the little-endian bytes of a float32 array."""
    h = 0xCBF29CE484222325
    for byte in np.asarray(x, dtype="<f4").tobytes():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_case(path, case, res):
    rec = res["rec"]
    p0, a, c = res["init"]
    units = units_of(case)
    flags = 0
    if res["m"] is not None:
        flags |= FLAG_HAS_M
    if res["v"] is not None:
        flags |= FLAG_HAS_V
    if rec.theta_tilde is not None:
        flags |= FLAG_HAS_THETA_TILDE
    if rec.clamped.any():
        flags |= FLAG_CLAMP_HIT
    name = case.name.encode("ascii")
    out = bytearray()
    out += MAGIC
    out += struct.pack("<II", FORMAT_VERSION, len(name)) + name
    out += struct.pack("<IiIIIIIIII",
                       0 if case.optimizer == "adamw" else 1,
                       case.sign,
                       0 if case.scope == "global" else 1,
                       int(case.nesterov),
                       len(case.tensors), case.steps, len(units), flags,
                       case.seed, case.noise_halving)
    out += struct.pack("<IIQ", int(case.normalize),
                       0 if case.direction == "momentum" else 1, case.rseed)
    out += struct.pack("<11d", case.beta1, case.beta2, case.eps, case.weight_decay,
                       case.momentum, case.dampening, case.rho, case.norm_ema,
                       case.scale_max, case.norm_eps, case.max_grad_norm)
    out += struct.pack("<%dd" % case.steps, *res["lrs"])
    for ts, g0 in zip(case.tensors, res["grad0"]):
        out += struct.pack("<IIIIddQ", ts.count, int(ts.perturb), ts.noise_shift, 0,
                           ts.lr_scale, ts.weight_decay_scale, fnv1a64(g0))

    def arr(x):
        x = np.asarray(x, dtype="<f4")
        return x.tobytes()

    for k in range(len(case.tensors)):
        out += arr(p0[k]) + arr(a[k]) + arr(c[k])
    for k in range(len(case.tensors)):
        out += arr(res["params"][k])
        if res["m"] is not None:
            out += arr(res["m"][k])
        if res["v"] is not None:
            out += arr(res["v"][k])
        if rec.theta_tilde is not None:
            out += arr(rec.theta_tilde[k])
    for t in range(case.steps):
        out += struct.pack("<dII", rec.grad_norm[t], int(rec.clipped[t]), 0)
        for u in range(len(units)):
            out += struct.pack("<5dII", rec.momentum_norm[t, u], rec.scale[t, u],
                               rec.coef[t, u], rec.unit_grad_norm[t, u], rec.gbar[t, u],
                               int(rec.clamped[t, u]), 0)
    out += END_MAGIC
    with open(path, "wb") as f:
        f.write(bytes(out))
    return len(out)


# ---------------------------------------------------------------------------


def check_case(case, res):
    """Properties the C test relies on; a failing one means: retune the case."""
    rec = res["rec"]
    # Keep every threshold decision (clamp, clip) well away from its
    # boundary, so float32 differences between torch and C cannot flip it.
    assert rec.min_clamp_margin > 1e-4, (case.name, "clamp too close to s_max", rec.min_clamp_margin)
    assert rec.min_clip_margin > 1e-4, (case.name, "norm too close to max_norm", rec.min_clip_margin)
    for arrays in (res["params"], res["m"] or [], res["v"] or []):
        for x in arrays:
            assert np.all(np.isfinite(x)), (case.name, "non-finite result")
    if case.max_grad_norm > 0.0:
        assert rec.clipped.any() and not rec.clipped.all(), (case.name, "clipping must toggle")
    if case.rho > 0.0 and case.normalize:
        assert rec.clamped.any(), (case.name, "scale clamp s_max never hit")
    if case.rho > 0.0:
        assert (rec.coef[1:] != 0).any(axis=0).sum() >= 1
        if not case.normalize:
            assert np.all(rec.scale[rec.coef != 0] == 1.0)
        # The perturbation must actually change the trajectory by far more
        # than the test tolerance, or the MGPO case would not test MGPO.
        plain = run_torch(case, rho=0.0)
        usage, _, _ = tolerance_usage(plain["params"], res["params"])
        assert usage > 1e3, (case.name, "perturbation has no visible effect", usage)
        for u, members in enumerate(units_of(case)):
            if not members:
                assert not rec.coef[:, u].any() and not rec.gbar[:, u].any()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outdir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--check", action="store_true",
                    help="also compare torch against a numpy float32 implementation")
    args = ap.parse_args()

    assert torch.__version__.startswith("1.13"), "expected Debian's torch 1.13"
    torch.set_num_threads(1)  # deterministic reductions (clip_grad_norm_)
    os.makedirs(args.outdir, exist_ok=True)
    total = 0
    for case in CASES:
        res = run_torch(case)
        check_case(case, res)
        size = write_case(os.path.join(args.outdir, case.name + ".bin"), case, res)
        total += size
        rec = res["rec"]
        line = "%-30s %7d bytes  clamp %2d/%-3d clip %2d/%-3d gbar %.3g..%.3g" % (
            case.name, size, int(rec.clamped.any(axis=1).sum()), case.steps,
            int(rec.clipped.sum()), case.steps,
            rec.gbar[:, rec.gbar.any(axis=0)].max(), rec.gbar[-1][rec.gbar[-1] > 0].min())
        if args.check:
            ref = run_numpy(case)
            parts = []
            for key in ("params", "m", "v"):
                if res[key] is not None:
                    usage, err, rel = tolerance_usage(ref[key], res[key])
                    parts.append("%s %.2g (abs %.2g rel %.2g)" % (key, usage, err, rel))
            if rec.theta_tilde is not None:
                usage, err, rel = tolerance_usage(ref["rec"].theta_tilde, rec.theta_tilde)
                parts.append("theta~ %.2g (abs %.2g rel %.2g)" % (usage, err, rel))
            scal = []
            for key in ("grad_norm", "unit_grad_norm", "gbar", "momentum_norm", "coef"):
                want = getattr(rec, key)
                got = getattr(ref["rec"], key)
                nz = want != 0
                assert np.array_equal(nz, got != 0), (case.name, key, "zero pattern differs")
                if nz.any():
                    scal.append("%s %.2g" % (key, np.max(np.abs(got[nz] / want[nz] - 1))))
            line += "\n    numpy vs torch, tolerance used: " + ", ".join(parts)
            line += "\n    numpy vs torch, scalars max rel: " + ", ".join(scal)
        print(line)
    print("total %d bytes in %d files" % (total, len(CASES)))


if __name__ == "__main__":
    sys.exit(main())
