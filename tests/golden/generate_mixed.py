#!/usr/bin/env python3
"""Generate the mixed-precision golden files that tests/test_mixed_golden.c
checks libmgpo against (bf16/fp16 parameters with float32 master weights,
bf16/fp16/fp32 gradients, a loss scale).

Usage (needs Debian's python3-torch, i.e. torch 1.13 for the system python):

    /usr/bin/python3 tests/golden/generate_mixed.py [--outdir DIR]

The reference is written in torch operations, independently of the C code,
from the numerical contract of mixed precision (include/mgpo.h, "Mixed
precision"):

* master0 = the typed parameters converted to float32 (exact);
  torch.optim.AdamW / SGD (one parameter group per tensor, as generate.py)
  steps the float32 masters.
* The gradient the optimizer sees is float32(g_typed) * float32(1/S), as
  torch.cuda.amp.GradScaler.unscale_ computes it (inv_scale = float32(1/S));
  the gradient-norm EMA and clipping (torch.nn.utils.clip_grad_norm_) see it.
* After each step the caller's buffer holds master.to(bfloat16 / float16)
  (round to nearest even).
* Perturbation: the caller's buffer receives
  (master + float32(c) * m).to(type), the product and the sum each rounded
  to float32 (two torch kernels, no fused multiply-add); the master is not
  perturbed.  m is the raw exp_avg / momentum_buffer.
* The "forward/backward" is generate.py's g = a*(x - c) + noise, in float32
  from x = the typed (perturbed) parameters converted to float32; then
  multiplied by S in float32 and converted to the gradient type.

LoRA pairs with bf16 A and B (LORA_CASES: an adapter-mode pair and a
base-mode pair over a bf16 W in one state) follow the same rules; their
model and the base-mode perturbation are described in the LoRA section
below.

Teacher forcing: the C test computes its gradients from the reference's
forward input, so both optimizers see the same gradient bits at every step
(a master that differs by an ulp can round the other way in bf16/fp16, and
that one element's gradient would then differ by a whole bf16/fp16 ulp,
which no float32 tolerance can absorb).  For that the file stores, per step
and buffer, an FNV-1a hash of the reference's typed forward input and the
list of its elements whose float32 value before rounding lies within the
float32 tolerance (TIE_RTOL, TIE_ATOL) of a rounding midpoint, with their
reference bits: only there may the library round the other way.
Everything else must be bit-identical.

Output: one mixed_*.bin per case (format in README.md, "Mixed precision").
Deterministic: the same torch build writes the same bytes.
"""

import argparse
import os
import struct
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as G  # noqa: E402  (the shared noise, cases and MGPO bookkeeping)

FORMAT_VERSION = 1
MAGIC = b"MGPOMIXD"
END_MAGIC = b"MGPO_END"

# mgpo_dtype values.
F32, BF16, F16 = 0, 1, 2
TORCH_TYPE = {F32: torch.float32, BF16: torch.bfloat16, F16: torch.float16}

# A forward-input element is listed as a near tie when its float32 value
# before rounding, master + c*m, lies within test_golden.c's float32
# tolerance of a bf16/fp16 rounding midpoint (any: near zero the gaps are
# small): TIE_RTOL * (|master| + |c*m|) + TIE_ATOL * max(1, |c|), its
# tolerance for the perturbed parameters (c*m magnifies m's error).  The
# masters and moments of the library and of torch differ by float32 ulps of
# the terms that made them (1e-8 absolute at most here); where they cancel,
# that is a large relative error of the result, hence the absolute term.
# The C test asserts that the library's own value is within the same
# distance wherever it rounds differently.
TIE_RTOL = 1e-6
TIE_ATOL = 1e-7


@dataclass
class MixedTensor(G.TensorSpec):
    param_type: int = BF16
    grad_type: int = BF16


@dataclass
class MixedCase(G.Case):
    grad_scale: float = 1.0  # S: the gradients are S times the true ones


def mixed_tensors(types, disabled=None):
    """generate.py's sizes 1, 7, 1000, 4097 with (param, grad) types."""
    ts = [MixedTensor(**vars(t), param_type=p, grad_type=g)
          for t, (p, g) in zip(G.default_tensors(), types)]
    if disabled is not None:
        ts[disabled] = replace(ts[disabled], perturb=False)
    return ts


# Type layouts (param, grad) per tensor; every case mixes bf16 and fp16.
MIX_A = [(BF16, F32), (F16, BF16), (F16, F16), (BF16, BF16)]
MIX_B = [(F16, F16), (BF16, F32), (BF16, BF16), (F16, F32)]
MIX_FP16 = [(F16, F16), (BF16, F16), (F16, F16), (BF16, F16)]

MGPO = dict(steps=60, init_scale=0.01, noise_halving=20)

CASES = [
    MixedCase("mixed_adamw_lookahead_global", "adamw", lr=1e-3, rho=0.003, sign=-1,
              scope="global", weight_decay=0.01, seed=61, tensors=mixed_tensors(MIX_A),
              **MGPO),
    MixedCase("mixed_adamw_ascent_global", "adamw", lr=1e-3, rho=0.003, sign=+1,
              scope="global", max_grad_norm=0.2, seed=62, grad_scale=1024.0,
              tensors=mixed_tensors(MIX_B, disabled=0), **dict(MGPO, init_scale=0.02)),
    MixedCase("mixed_adamw_lookahead_tensor", "adamw", lr=1e-3, rho=0.005, sign=-1,
              scope="tensor", beta1=0.8, norm_ema=0.8, seed=63, grad_scale=65536.0,
              tensors=mixed_tensors(MIX_FP16, disabled=2), **MGPO),
    MixedCase("mixed_adamw_ascent_tensor", "adamw", lr=1e-3, rho=0.005, sign=+1,
              scope="tensor", weight_decay=0.01, seed=64, grad_scale=1000.0,
              tensors=mixed_tensors(MIX_A), **MGPO),
    MixedCase("mixed_sgd_lookahead_global", "sgd", lr=0.1, momentum=0.9, rho=0.003,
              sign=-1, scope="global", seed=71, grad_scale=65536.0,
              tensors=mixed_tensors(MIX_FP16, disabled=1), **MGPO),
    MixedCase("mixed_sgd_ascent_global", "sgd", lr=0.1, momentum=0.9, dampening=0.1,
              weight_decay=1e-3, rho=0.003, sign=+1, scope="global", seed=72,
              tensors=mixed_tensors(MIX_B), **MGPO),
    MixedCase("mixed_sgd_lookahead_tensor", "sgd", lr=0.1, momentum=0.9, nesterov=True,
              rho=0.005, sign=-1, scope="tensor", max_grad_norm=0.2, seed=73,
              grad_scale=1024.0, tensors=mixed_tensors(MIX_A, disabled=3),
              **dict(MGPO, init_scale=0.02)),
    MixedCase("mixed_sgd_ascent_tensor", "sgd", lr=0.1, momentum=0.8, rho=0.005,
              sign=+1, scope="tensor", weight_decay=0.01, norm_ema=0.8, seed=74,
              grad_scale=65536.0, tensors=mixed_tensors(MIX_FP16), **MGPO),
]


# ---------------------------------------------------------------------------
# Typed values.


def f32_scalar(x):
    return torch.tensor(x, dtype=torch.float32)


def to_type(x32, dtype):
    """Round a float32 tensor to the dtype (nearest even); float32 as is."""
    return x32 if dtype == F32 else x32.to(TORCH_TYPE[dtype])


def bits16(t):
    """The uint16 bit patterns of a bf16/fp16 tensor (numpy)."""
    return t.view(torch.int16).numpy().view(np.uint16).copy()


def typed_step(r, up, dtype):
    """The typed values one step above (up) or below those of r: the
    magnitude's bits move by one, away from zero or toward it; from a zero,
    to the smallest subnormal of that direction."""
    b = r.view(torch.int16).to(torch.int32) & 0xFFFF
    negative = b >= 0x8000
    away = torch.tensor(up) != negative
    other = torch.where(away, b + 1, b - 1)
    zero = (b & 0x7FFF) == 0
    other = torch.where(zero, torch.tensor(1 if up else 0x8001), other)
    return other.to(torch.int16).view(TORCH_TYPE[dtype])


def tie_list(pre32, size32, coef, dtype):
    """Indices (and reference bits) of the elements that a float32 error
    within the tolerance could round to another typed value: those within
    tol of an end of the interval that rounds to their value (the midpoints
    with the two neighbours, exact in float64).  size32 = |master| + |c*m|:
    the sum can cancel, its error cannot."""
    r = pre32.to(TORCH_TYPE[dtype])
    v = r.double()
    lo = (typed_step(r, False, dtype).double() + v) / 2.0
    hi = (typed_step(r, True, dtype).double() + v) / 2.0
    x = pre32.double()
    tol = TIE_RTOL * size32.double() + TIE_ATOL * max(1.0, abs(coef))
    near = (x - lo <= tol) | (hi - x <= tol)
    idx = torch.nonzero(near).flatten().numpy().astype(np.uint32)
    return idx, bits16(r)[idx]


# ---------------------------------------------------------------------------
# The reference.


def gradient_typed(case, k, t, a_t, c_t, x_typed):
    """The caller's typed gradient at forward input x_typed: generate.py's
    float32 g = a*(x - c) + noise, times S in float32, to the gradient type."""
    ts = case.tensors[k]
    g32 = G.gradient_torch(a_t[k], c_t[k], x_typed.float(),
                           torch.from_numpy(G.noise(case, t, k, ts.count)))
    return to_type(torch.mul(g32, f32_scalar(case.grad_scale)), ts.grad_type)


def run_torch(case, rho=None):
    if rho is not None:
        case = replace(case, rho=rho)
    p0_f, a, c = G.init_arrays(case)
    typed0 = [to_type(torch.from_numpy(x), ts.param_type) for x, ts in zip(p0_f, case.tensors)]
    masters = [torch.nn.Parameter(x.float().clone()) for x in typed0]
    a_t = [torch.from_numpy(x) for x in a]
    c_t = [torch.from_numpy(x) for x in c]
    opt, moment = G.make_optimizer(case, masters)

    inv_scale = f32_scalar(1.0 / case.grad_scale)  # GradScaler: float32(1/S)
    lrs = G.lr_schedule(case)
    rec = G.Recorder(case)
    rec.inputs = []  # per step, per tensor: (hash, tie indices, tie bits)
    gbar = [0.0] * len(G.units_of(case))
    ties_total = 0
    with torch.no_grad():
        for t in range(case.steps):
            m_list = [moment(p, 0) for p in masters]
            coefs = None
            if t > 0 and case.rho > 0.0:
                coefs = G.perturb_coefficients(case, t, [m.numpy() for m in m_list], gbar, rec)
            # The forward input: round(master + c*m) where perturbed, else
            # round(master); each unit applies its coefficient as a float.
            pre = [p.detach().clone() for p in masters]
            size = [p.detach().abs() for p in masters]
            applied = [0.0] * len(masters)
            if coefs is not None:
                for u, members in enumerate(G.units_of(case)):
                    if coefs[u] == 0.0:
                        continue
                    cf = f32_scalar(coefs[u])
                    for k in members:
                        step = torch.mul(m_list[k], cf)
                        pre[k] = torch.add(masters[k], step)
                        size[k] = masters[k].abs() + step.abs()
                        applied[k] = float(cf)
            x = [to_type(pre[k], ts.param_type) for k, ts in enumerate(case.tensors)]
            step_inputs = []
            for k, ts in enumerate(case.tensors):
                idx, tie_bits = tie_list(pre[k], size[k], applied[k], ts.param_type)
                ties_total += len(idx)
                step_inputs.append((fnv1a64_bytes(typed_bytes(x[k])), idx, tie_bits))
            rec.inputs.append(step_inputs)

            grads_typed = [gradient_typed(case, k, t, a_t, c_t, x[k])
                           for k in range(len(case.tensors))]
            if t == 0:
                grad0 = [g for g in grads_typed]
            # GradScaler.unscale_: float32(g) * float32(1/S).
            grads = [torch.mul(g.float(), inv_scale) for g in grads_typed]

            G.update_gbar(case, t, [g.numpy() for g in grads], gbar, rec)
            for p, g in zip(masters, grads):
                p.grad = g.clone()
            G.clip_gradients(case, t, masters, rec)
            for grp, ts in zip(opt.param_groups, case.tensors):
                grp["lr"] = lrs[t] * ts.lr_scale
            opt.step()

    final_typed = [to_type(p.detach(), ts.param_type) for p, ts in zip(masters, case.tensors)]
    return {
        "master": [p.detach().numpy().copy() for p in masters],
        "typed": [bits16(x) for x in final_typed],
        "m": [moment(p, 0).numpy().copy() for p in masters],
        "v": [moment(p, 1).numpy().copy() for p in masters] if case.optimizer == "adamw" else None,
        "rec": rec,
        "lrs": lrs,
        "init": ([bits16(x) for x in typed0], a, c),
        "grad0": grad0,
        "ties": ties_total,
    }


# ---------------------------------------------------------------------------
# Binary writer (format: README.md, "Mixed precision").


def typed_bytes(g):
    """Little-endian bytes of a typed tensor (float32 or 16-bit patterns)."""
    if g.dtype == torch.float32:
        return g.numpy().astype("<f4").tobytes()
    return bits16(g).astype("<u2").tobytes()


def fnv1a64_bytes(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def header_bytes(magic, case, flags, lrs):
    """generate.py's header (items: tensors or pairs), then S and the lrs."""
    name = case.name.encode("ascii")
    out = bytearray()
    out += magic
    out += struct.pack("<II", FORMAT_VERSION, len(name)) + name
    out += struct.pack("<IiIIIIIIII",
                       0 if case.optimizer == "adamw" else 1, case.sign,
                       0 if case.scope == "global" else 1, int(case.nesterov),
                       len(case.tensors), case.steps, len(G.units_of(case)), flags,
                       case.seed, case.noise_halving)
    out += struct.pack("<IIQ", 1, 0, 0)  # normalize on, momentum direction, rseed
    out += struct.pack("<12d", case.beta1, case.beta2, case.eps, case.weight_decay,
                       case.momentum, case.dampening, case.rho, case.norm_ema,
                       case.scale_max, case.norm_eps, case.max_grad_norm, case.grad_scale)
    out += struct.pack("<%dd" % case.steps, *lrs)
    return out


def step_bytes(rec, t, n_units):
    """A step's scalars: total gradient norm, clipped, then per unit."""
    out = struct.pack("<dII", rec.grad_norm[t], int(rec.clipped[t]), 0)
    for u in range(n_units):
        out += struct.pack("<5dII", rec.momentum_norm[t, u], rec.scale[t, u],
                           rec.coef[t, u], rec.unit_grad_norm[t, u], rec.gbar[t, u],
                           int(rec.clamped[t, u]), 0)
    return out


def inputs_bytes(inputs):
    """The forward inputs of one step: per buffer, its hash and near ties."""
    out = bytearray()
    for h, idx, tie_bits in inputs:
        out += struct.pack("<QI", h, len(idx))
        for i, b in zip(idx, tie_bits):
            out += struct.pack("<IH", int(i), int(b))
    return out


def file_flags(res):
    flags = G.FLAG_HAS_M | (G.FLAG_HAS_V if res["v"] is not None else 0)
    return flags | (G.FLAG_CLAMP_HIT if res["rec"].clamped.any() else 0)


def finish_file(path, out, case, res):
    """Appends the expected results, the steps and the end marker to out
    and writes the file; returns its size."""
    for k in range(len(case.tensors)):
        out += np.asarray(res["master"][k], "<f4").tobytes()
        out += res["typed"][k].astype("<u2").tobytes()
        out += np.asarray(res["m"][k], "<f4").tobytes()
        if res["v"] is not None:
            out += np.asarray(res["v"][k], "<f4").tobytes()
    for t in range(case.steps):
        out += step_bytes(res["rec"], t, len(G.units_of(case)))
        out += inputs_bytes(res["rec"].inputs[t])
    out += END_MAGIC
    with open(path, "wb") as f:
        f.write(bytes(out))
    return len(out)


def write_case(path, case, res):
    p0_bits, a, c = res["init"]
    out = header_bytes(MAGIC, case, file_flags(res), res["lrs"])
    for ts, g0 in zip(case.tensors, res["grad0"]):
        out += struct.pack("<IIIIIIddQ", ts.count, int(ts.perturb), ts.noise_shift,
                           ts.param_type, ts.grad_type, 0, ts.lr_scale,
                           ts.weight_decay_scale, fnv1a64_bytes(typed_bytes(g0)))
    for k in range(len(case.tensors)):
        out += p0_bits[k].astype("<u2").tobytes()
        out += np.asarray(a[k], "<f4").tobytes() + np.asarray(c[k], "<f4").tobytes()
    return finish_file(path, out, case, res)


def check_case(case, res, rerun):
    """Properties the C test relies on; a failing one means: retune the case.
    rerun(case, rho=0.0) runs the case again without the perturbation."""
    rec = res["rec"]
    assert rec.min_clamp_margin > 1e-4, (case.name, "clamp too close to s_max")
    assert rec.min_clip_margin > 1e-4, (case.name, "norm too close to max_norm")
    for arrays in (res["master"], res["m"], res["v"] or []):
        for x in arrays:
            assert np.all(np.isfinite(x)), (case.name, "non-finite result")
    for g in res["grad0"]:
        assert torch.isfinite(g.float()).all(), (case.name, "scaled gradient overflowed")
    if case.max_grad_norm > 0.0:
        assert rec.clipped.any() and not rec.clipped.all(), (case.name, "clipping must toggle")
    assert rec.clamped.any(), (case.name, "scale clamp s_max never hit")
    # The perturbation must change the trajectory by far more than the
    # tolerance, or the case would not test the perturbation.
    plain = rerun(case, rho=0.0)
    usage, _, _ = G.tolerance_usage(plain["master"], res["master"])
    assert usage > 1e3, (case.name, "perturbation has no visible effect", usage)

# ---------------------------------------------------------------------------
# LoRA pairs with bf16/fp16 A and B (mgpo_add_lora_pair_typed).
#
# Each pair k is a layer W_eff = W + s*B@A (A: r x n_in, B: n_out x r) with
# the loss sum 0.5*a*(W_eff - C)^2 + noise*W_eff, so G = a*(W_eff - C) +
# noise (n_out x n_in) and g_A = s*B^T G, g_B = s*G A^T, all in float64 from
# the typed forward input (A, B and W converted to float), then float32,
# times S in float32, to the gradient type.  The optimizer steps the float32
# masters of A and B; the scope units hold pairs, and their norms are taken
# in weight space from the masters: n = ||s*(m_B A + B m_A)||, gamma =
# ||s*(g_B A + B g_A)|| (generate.py's bookkeeping, fed with those
# matrices).  Adapter mode perturbs the typed A and B as tensors are
# perturbed (W is only read); base mode writes
# round(float32(float64(W) + (float64(float32(c)) * s) * acc)),
# acc = m_B A + B m_A in float64, into W and leaves A and B clean.


@dataclass
class PairSpec(G.TensorSpec):
    rank: int = 2
    n_in: int = 8
    n_out: int = 4
    mode: int = 0  # 0 adapter, 1 base
    adapter_type: int = BF16
    grad_type: int = BF16
    base_type: int = BF16
    scaling: float = 2.0


LORA_MAGIC = b"MGPOMXLR"


def lora_pairs(grad_type):
    # An adapter-mode pair and a base-mode pair in one state, odd shapes.
    return [PairSpec(count=0, rank=4, n_in=24, n_out=16, mode=0, grad_type=grad_type,
                     scaling=2.0, noise_shift=9),
            PairSpec(count=0, rank=3, n_in=20, n_out=12, mode=1, grad_type=grad_type,
                     scaling=1.0, lr_scale=2.0, noise_shift=8)]


LORA_CASES = [
    MixedCase("mixed_lora_adamw_tensor", "adamw", lr=1e-3, rho=0.005, sign=-1,
              scope="tensor", weight_decay=0.01, seed=81, steps=50, noise_halving=10,
              tensors=lora_pairs(F32)),
    MixedCase("mixed_lora_sgd_global", "sgd", lr=0.1, momentum=0.9, rho=0.005, sign=+1,
              scope="global", seed=82, steps=50, noise_halving=10, grad_scale=65536.0,
              tensors=lora_pairs(F16)),
]


def lora_init(case):
    g = torch.Generator().manual_seed(case.seed)
    out = []
    for ps in case.tensors:
        def randn(*shape, scale):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float()
        # Small values, as generate.py's (its c_scale): the float32 rounding
        # the tolerance allows for is a fraction of an ulp of |p|.
        A = to_type(randn(ps.rank, ps.n_in, scale=0.05), ps.adapter_type)
        B = to_type(randn(ps.n_out, ps.rank, scale=0.05), ps.adapter_type)
        W = to_type(randn(ps.n_out, ps.n_in, scale=0.05), ps.base_type)
        a = (torch.rand(ps.n_out, ps.n_in, generator=g, dtype=torch.float64) * 0.75 + 0.25).float()
        C = (W.double() + randn(ps.n_out, ps.n_in, scale=0.01).double()).float()
        out.append((A, B, W, a, C))
    return out


def lora_gradients(case, k, t, a, C, A, B, W):
    """The typed g_A, g_B of pair k at the typed forward input A, B, W."""
    ps = case.tensors[k]
    A64, B64, W64 = A.double(), B.double(), W.double()
    nz = torch.from_numpy(G.noise(case, t, k, ps.n_out * ps.n_in)).double().reshape(ps.n_out, ps.n_in)
    weff = W64 + ps.scaling * (B64 @ A64)
    Gm = a.double() * (weff - C.double()) + nz
    gA = (ps.scaling * (B64.T @ Gm)).float()
    gB = (ps.scaling * (Gm @ A64.T)).float()
    S = f32_scalar(case.grad_scale)
    return [to_type(torch.mul(g, S), ps.grad_type) for g in (gA, gB)]


def weight_space(ps, A, B, XA, XB):
    """s*(X_B A + B X_A) in float64."""
    return ps.scaling * (XB.double() @ A.double() + B.double() @ XA.double())


def run_lora(case, rho=None):
    if rho is not None:
        case = replace(case, rho=rho)
    init = lora_init(case)
    masters = []
    for A, B, W, a, C in init:
        masters += [torch.nn.Parameter(A.float().clone()), torch.nn.Parameter(B.float().clone())]
    slot_specs = [G.TensorSpec(0, lr_scale=ps.lr_scale) for ps in case.tensors for _ in (0, 1)]
    opt, moment = G.make_optimizer(replace(case, tensors=slot_specs), masters)
    inv_scale = f32_scalar(1.0 / case.grad_scale)
    lrs = G.lr_schedule(case)
    rec = G.Recorder(case)
    rec.inputs = []
    gbar = [0.0] * len(G.units_of(case))
    ties_total = 0
    with torch.no_grad():
        for t in range(case.steps):
            mA = [moment(masters[2 * k], 0) for k in range(len(case.tensors))]
            mB = [moment(masters[2 * k + 1], 0) for k in range(len(case.tensors))]
            coefs = None
            if t > 0 and case.rho > 0.0:
                D = [weight_space(ps, masters[2 * k], masters[2 * k + 1], mA[k], mB[k]).numpy().ravel()
                     for k, ps in enumerate(case.tensors)]
                coefs = G.perturb_coefficients(case, t, D, gbar, rec)
            step_inputs, x = [], []
            for k, ps in enumerate(case.tensors):
                A, B, W = masters[2 * k], masters[2 * k + 1], init[k][2]
                u = 0 if case.scope == "global" else k
                c = coefs[u] if coefs is not None else 0.0
                cf = f32_scalar(c)
                pre = [A.detach().clone(), B.detach().clone(), W.float()]
                size = [A.detach().abs(), B.detach().abs(), W.float().abs()]
                if c != 0.0 and ps.mode == 0:
                    for j, (p, m) in enumerate(((A, mA[k]), (B, mB[k]))):
                        stepv = torch.mul(m, cf)
                        pre[j] = torch.add(p, stepv)
                        size[j] = p.abs() + stepv.abs()
                elif c != 0.0:
                    cs = float(cf) * ps.scaling
                    delta = cs * (mB[k].double() @ A.double() + B.double() @ mA[k].double())
                    pre[2] = (W.double() + delta).float()
                    size[2] = (W.double().abs() + delta.abs()).float()
                types = (ps.adapter_type, ps.adapter_type, ps.base_type)
                xk = [to_type(p, ty) for p, ty in zip(pre, types)]
                for j in range(3):
                    applied = float(cf) * (ps.scaling if j == 2 else 1.0)
                    idx, tie_bits = tie_list(pre[j].flatten(), size[j].flatten(), applied, types[j])
                    ties_total += len(idx)
                    step_inputs.append((fnv1a64_bytes(typed_bytes(xk[j])), idx, tie_bits))
                x.append(xk)
            rec.inputs.append(step_inputs)

            typed_grads = [lora_gradients(case, k, t, init[k][3], init[k][4], *x[k])
                           for k in range(len(case.tensors))]
            if t == 0:
                grad0 = typed_grads
            grads = [[torch.mul(g.float(), inv_scale) for g in pair] for pair in typed_grads]
            Dg = [weight_space(ps, masters[2 * k], masters[2 * k + 1], grads[k][0], grads[k][1])
                  .numpy().ravel() for k, ps in enumerate(case.tensors)]
            G.update_gbar(case, t, Dg, gbar, rec)
            # The total norm is over the raw gradients of A and B.
            rec.grad_norm[t] = G.norm64([g.numpy().ravel() for pair in grads for g in pair])
            flat = [g for pair in grads for g in pair]
            for p, g in zip(masters, flat):
                p.grad = g.clone()
            G.clip_gradients(case, t, masters, rec)
            for grp, sp in zip(opt.param_groups, slot_specs):
                grp["lr"] = lrs[t] * sp.lr_scale
            opt.step()

    def both(f):
        return [torch.cat([f(masters[2 * k]).flatten(), f(masters[2 * k + 1]).flatten()])
                for k in range(len(case.tensors))]

    return {
        "master": [x.numpy().copy() for x in both(lambda p: p.detach())],
        "typed": [bits16(to_type(x, ps.adapter_type))
                  for x, ps in zip(both(lambda p: p.detach()), case.tensors)],
        "m": [x.numpy().copy() for x in both(lambda p: moment(p, 0))],
        "v": [x.numpy().copy() for x in both(lambda p: moment(p, 1))]
        if case.optimizer == "adamw" else None,
        "rec": rec, "lrs": lrs, "init": init, "ties": ties_total,
        "grad0": [g for pair in grad0 for g in pair],
    }


def write_lora_case(path, case, res):
    out = header_bytes(LORA_MAGIC, case, file_flags(res), res["lrs"])
    for k, ps in enumerate(case.tensors):
        gA, gB = res["grad0"][2 * k], res["grad0"][2 * k + 1]
        out += struct.pack("<8Idd", ps.rank, ps.n_in, ps.n_out, ps.mode, ps.adapter_type,
                           ps.grad_type, ps.base_type, ps.noise_shift, ps.scaling, ps.lr_scale)
        out += struct.pack("<Q", fnv1a64_bytes(typed_bytes(gA) + typed_bytes(gB)))
    for A, B, W, a, C in res["init"]:
        out += typed_bytes(A) + typed_bytes(B) + typed_bytes(W)
        out += a.numpy().astype("<f4").tobytes() + C.numpy().astype("<f4").tobytes()
    return finish_file(path, out, case, res)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outdir", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()

    assert torch.__version__.startswith("1.13"), "expected Debian's torch 1.13"
    torch.set_num_threads(1)  # deterministic reductions (clip_grad_norm_)
    os.makedirs(args.outdir, exist_ok=True)
    total = 0
    kinds = [(CASES, run_torch, write_case), (LORA_CASES, run_lora, write_lora_case)]
    for cases, runner, writer in kinds:
        for case in cases:
            res = runner(case)
            check_case(case, res, runner)
            size = writer(os.path.join(args.outdir, case.name + ".bin"), case, res)
            total += size
            rec = res["rec"]
            print("%-30s %7d bytes  clamp %2d/%-3d clip %2d/%-3d near ties %d" % (
                case.name, size, int(rec.clamped.any(axis=1).sum()), case.steps,
                int(rec.clipped.sum()), case.steps, res["ties"]))
    print("total %d bytes in %d files" % (total, len(CASES) + len(LORA_CASES)))


if __name__ == "__main__":
    sys.exit(main())
