#!/usr/bin/env bash
# threads.sh: wall time of gpt_lora's pretraining (no cache) with 1 and 2
# threads, on an otherwise idle machine and with BUSY competing busy loops,
# for each OpenMP wait policy; docs/results.md ("Two threads") has the
# numbers.  Hold the benchmark lock around it:
#   flock <bench.lock> examples/gpt_lora/threads.sh
# Settings [defaults]: GPT_LORA [build/examples/gpt_lora/gpt_lora_loops],
# ARGS (model and steps) [--pretrain-steps 300 --steps 1], BUSY [0 2],
# THREADS [1 2], POLICIES (OMP_WAIT_POLICY; "unset" = libgomp's default
# spin-then-sleep) [unset PASSIVE], LIMIT seconds per run [300].
set -euo pipefail
GPT_LORA=${GPT_LORA:-build/examples/gpt_lora/gpt_lora_loops}
ARGS=${ARGS:---pretrain-steps 300 --steps 1}
BUSY=${BUSY:-0 2}
THREADS=${THREADS:-1 2}
POLICIES=${POLICIES:-unset PASSIVE}
LIMIT=${LIMIT:-300}
echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; $GPT_LORA $ARGS"
echo "busy_loops threads policy wall_s"
for busy in $BUSY; do
    pids=()
    for ((i = 0; i < busy; i++)); do (while :; do :; done) & pids+=($!); done
    for policy in $POLICIES; do for th in $THREADS; do
        [ "$th" = 1 ] && [ "$policy" != "$(echo "$POLICIES" | awk '{print $1}')" ] && continue # policy moot
        env_policy=()
        [ "$policy" != unset ] && env_policy=(OMP_WAIT_POLICY="$policy")
        s=$(date +%s.%N)
        # shellcheck disable=SC2086
        if env "${env_policy[@]}" OMP_NUM_THREADS="$th" OPENBLAS_NUM_THREADS="$th" timeout "$LIMIT" \
            "$GPT_LORA" $ARGS --quiet > /dev/null; then
            wall=$(echo "$(date +%s.%N) - $s" | bc)
        else
            wall=">$LIMIT"
        fi
        echo "$busy $th $policy $wall"
    done; done
    for p in "${pids[@]}"; do kill "$p"; done
done
