#!/usr/bin/python3
"""Writes the files llm.c's CPU train_gpt2 (karpathy/llm.c, commit f1e2ace)
opens, so that it runs without downloads: a randomly initialised small GPT-2
in its checkpoint format, a byte-level tokenizer, and train/val token files
made from local text.  Our own code; the layouts are those read by
gpt2_build_from_checkpoint, tokenizer_init and dataloader_init.

    /usr/bin/python3 bench/llmc_fixture.py OUTDIR [--layers 2] [--channels 64]
        [--heads 4] [--seq 64] [--text FILE ...]

OUTDIR gets gpt2_124M.bin (the name train_gpt2 opens; the model is small),
gpt2_tokenizer.bin and dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin.
Tokens are bytes (0..255) plus an end-of-text token 256: vocab 257, padded
to 320.  The initialisation is GPT-2's: N(0, 0.02) weights, residual
projections scaled by 1/sqrt(2 L), zero biases, unit layer-norm gains.
"""
import argparse
import glob
import os
import struct

import numpy as np


def header(*values):
    h = np.zeros(256, dtype=np.int32)
    h[: len(values)] = values
    return h.tobytes()


def write_model(path, L, C, NH, maxT, V, Vp, rng):
    std = 0.02
    proj = std / np.sqrt(2 * L)
    normal = lambda shape, s: rng.normal(0.0, s, size=shape).astype(np.float32)
    wte = np.zeros((Vp, C), np.float32)
    wte[:V] = normal((V, C), std)          # padded rows stay zero, as llm.c's
    tensors = [
        wte, normal((maxT, C), std),
        np.ones((L, C), np.float32), np.zeros((L, C), np.float32),      # ln1 w, b
        normal((L, 3 * C, C), std), np.zeros((L, 3 * C), np.float32),   # qkv w, b
        normal((L, C, C), proj), np.zeros((L, C), np.float32),          # attn proj w, b
        np.ones((L, C), np.float32), np.zeros((L, C), np.float32),      # ln2 w, b
        normal((L, 4 * C, C), std), np.zeros((L, 4 * C), np.float32),   # fc w, b
        normal((L, C, 4 * C), proj), np.zeros((L, C), np.float32),      # fc proj w, b
        np.ones(C, np.float32), np.zeros(C, np.float32),                # lnf w, b
    ]
    with open(path, "wb") as f:
        f.write(header(20240326, 3, maxT, V, L, NH, C, Vp))
        for t in tensors:
            f.write(t.tobytes())
    return sum(t.size for t in tensors)


def write_tokenizer(path, V, eot):
    with open(path, "wb") as f:
        f.write(header(20240328, 2, V, eot))
        for i in range(V):
            b = bytes([i]) if i < 256 else b"<|endoftext|>"
            f.write(struct.pack("B", len(b)) + b)


def write_tokens(path, tokens):
    with open(path, "wb") as f:
        f.write(header(20240520, 1, len(tokens)))
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--text", nargs="*",
                    default=sorted(glob.glob("/usr/share/common-licenses/GPL-3")) +
                    sorted(glob.glob("/usr/share/common-licenses/Apache-2.0")))
    a = ap.parse_args()
    V, Vp, eot = 257, 320, 256
    rng = np.random.default_rng(a.seed)
    n = write_model(os.path.join(a.outdir, "gpt2_124M.bin"), a.layers, a.channels, a.heads,
                    a.seq, V, Vp, rng)
    write_tokenizer(os.path.join(a.outdir, "gpt2_tokenizer.bin"), V, eot)
    tokens = []
    for name in a.text:
        with open(name, "rb") as f:
            tokens += [eot] + list(f.read())
    split = len(tokens) // 10
    data = os.path.join(a.outdir, "dev", "data", "tinyshakespeare")
    os.makedirs(data, exist_ok=True)
    write_tokens(os.path.join(data, "tiny_shakespeare_val.bin"), tokens[:split])
    write_tokens(os.path.join(data, "tiny_shakespeare_train.bin"), tokens[split:])
    print(f"model: {n} parameters (L={a.layers}, C={a.channels}, heads={a.heads}, "
          f"maxT={a.seq}, V={V}, Vp={Vp}); tokens: {split} val, {len(tokens) - split} train")


if __name__ == "__main__":
    main()
