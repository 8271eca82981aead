#!/usr/bin/env bash
# llmc_compare.sh: tokens per second of examples/gpt_lora against llm.c's
# CPU reference train_gpt2.c (github.com/karpathy/llm.c), built with llm.c's
# own Makefile flags, at the same model size: full training steps (forward,
# backward, AdamW over all weights) of a 2-block, width-256, 4-head GPT with
# context 64, vocabulary 256, batch 8.  llm.c needs a checkpoint and token
# files: this script writes a randomly initialised checkpoint of that size
# and byte tokens of gpt_lora's pretraining text in llm.c's formats, and sets
# B = 8 in a copy of train_gpt2.c (nothing else changes).  Nothing is
# downloaded and nothing is written into the llm.c checkout.
#
#   LLMC=/path/to/llm.c flock <bench.lock> bench/llmc_compare.sh
#
# Settings [defaults]: LLMC (a checkout, required), GPT_LORA
# [build/examples/gpt_lora/gpt_lora], THREADS [1], WORK [a mktemp dir].
# Prints ms per step (median of steps 1..40, step 0 is warm-up) and tokens/s.
set -euo pipefail
: "${LLMC:?set LLMC to an llm.c checkout}"
GPT_LORA=${GPT_LORA:-build/examples/gpt_lora/gpt_lora}
THREADS=${THREADS:-1}
WORK=${WORK:-$(mktemp -d)}
B=8 T=64 L=2 NH=4 C=256 V=256
mkdir -p "$WORK/dev/data/tinyshakespeare"
cp "$LLMC/train_gpt2.c" "$LLMC/Makefile" "$WORK/"
ln -sfn "$LLMC/llmc" "$WORK/llmc"
sed -i 's/int B = 4;/int B = 8;/' "$WORK/train_gpt2.c"
grep -q 'int B = 8;' "$WORK/train_gpt2.c" || { echo "llmc_compare.sh: cannot set B in train_gpt2.c" >&2; exit 1; }

# The checkpoint (llm.c format version 3: 256 int header, then fp32
# parameters in llm.c's order, GPT-2 initialisation) and the token files.
cat > "$WORK/make_inputs.c" <<'CEOF'
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
static uint64_t s = 42;
static float normal(float std) {
    double u1, u2;
    s = s * 6364136223846793005ull + 1442695040888963407ull; u1 = ((s >> 11) + 0.5) * 0x1.0p-53;
    s = s * 6364136223846793005ull + 1442695040888963407ull; u2 = ((s >> 11) + 0.5) * 0x1.0p-53;
    return (float)(std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static void put(FILE *f, size_t n, float std, float constant) {
    for (size_t i = 0; i < n; i++) { float v = std > 0 ? normal(std) : constant; fwrite(&v, 4, 1, f); }
}
int main(int argc, char **argv) {
    int T = atoi(argv[1]), V = atoi(argv[2]), L = atoi(argv[3]), NH = atoi(argv[4]), C = atoi(argv[5]);
    int h[256] = {20240326, 3, T, V, L, NH, C, V};
    FILE *f = fopen("gpt2_124M.bin", "wb");
    fwrite(h, sizeof h, 1, f);
    float r = 0.02f / sqrtf(2.0f * L);
    put(f, (size_t)V * C, 0.02f, 0); put(f, (size_t)T * C, 0.01f, 0);       /* wte, wpe */
    put(f, (size_t)L * C, 0, 1); put(f, (size_t)L * C, 0, 0);               /* ln1 */
    put(f, (size_t)L * 3 * C * C, 0.02f, 0); put(f, (size_t)L * 3 * C, 0, 0); /* qkv */
    put(f, (size_t)L * C * C, r, 0); put(f, (size_t)L * C, 0, 0);           /* attproj */
    put(f, (size_t)L * C, 0, 1); put(f, (size_t)L * C, 0, 0);               /* ln2 */
    put(f, (size_t)L * 4 * C * C, 0.02f, 0); put(f, (size_t)L * 4 * C, 0, 0); /* fc */
    put(f, (size_t)L * C * 4 * C, r, 0); put(f, (size_t)L * C, 0, 0);       /* fcproj */
    put(f, C, 0, 1); put(f, C, 0, 0);                                       /* lnf */
    fclose(f);
    /* byte tokens of stdin, first 90 % train, rest val */
    static unsigned char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, stdin), cut = n / 10 * 9;
    const char *names[2] = {"dev/data/tinyshakespeare/tiny_shakespeare_train.bin",
                            "dev/data/tinyshakespeare/tiny_shakespeare_val.bin"};
    for (int k = 0; k < 2; k++) {
        size_t a = k ? cut : 0, b = k ? n : cut;
        int dh[256] = {20240520, 1, (int)(b - a)};
        FILE *g = fopen(names[k], "wb");
        fwrite(dh, sizeof dh, 1, g);
        for (size_t i = a; i < b; i++) { uint16_t t = buf[i]; fwrite(&t, 2, 1, g); }
        fclose(g);
    }
    return 0;
}
CEOF
cc -O2 -o "$WORK/make_inputs" "$WORK/make_inputs.c" -lm
(cd "$WORK" && cat /usr/share/common-licenses/{Apache-2.0,GPL-2,GPL-3,LGPL-2.1,MPL-2.0,Artistic} |
     ./make_inputs $T $V $L $NH $C)
make -s -C "$WORK" train_gpt2 > "$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; exit 1; }
echo "# llm.c built with: $(make -s -n -C "$WORK" train_gpt2 2> /dev/null | grep -- -Ofast)"

echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'); $THREADS thread(s); B=$B T=$T L=$L C=$C NH=$NH V=$V"
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ms=$(cd "$WORK" && OMP_NUM_THREADS=$THREADS ./train_gpt2 | awk '/^step [0-9]+: train loss/ && $2 != "0:" { print $(NF - 1) + 0 }' | sed 's/(//' | median)
echo "llm.c train_gpt2 (all weights, AdamW): $ms ms/step, $(echo "$B * $T * 1000 / $ms" | bc) tokens/s"
# gpt_lora: the same full training step is its pretraining step (plus
# clipping); 41 steps, the time of steps 2..41.
out=$(OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE "$GPT_LORA" --layers $L \
      --dim $C --heads $NH --seq $T --batch $B --pretrain-steps 41 --steps 1 --eval-windows 8)
ms=$(echo "$out" | awk '/^pretrain step +1\// { a = $(NF - 1) } /^pretrain step +41\// { b = $(NF - 1) }
                       END { gsub(/\(/, "", a); gsub(/\(/, "", b); printf "%.1f", (b - a) * 1000 / 40 }')
echo "gpt_lora pretraining (all weights, AdamW): $ms ms/step, $(echo "$B * $T * 1000 / $ms" | bc) tokens/s"
