# ctest example_gpt_lora_cache_key: the pretrained-model cache is reused only
# when everything that determines it is unchanged.  Runs GPT_LORA on a tiny
# model with the cache file CACHE and checks, from what it prints, whether
# each run pretrained ("pretraining: no cache") or loaded the cache; a loaded
# model must give the same fine-tuning result as the run that wrote it.
cmake_policy(SET CMP0054 NEW)
set(TINY --layers 1 --dim 32 --heads 2 --seq 32 --batch 4 --pretrain-steps 20 --steps 4 --eval-every 2
         --eval-windows 8 --rank 4 --lr 0.01 --optimizer adamw --model-cache ${CACHE})
file(REMOVE ${CACHE})

# run(<expect hit|miss> <label> args...): one run; its final line in final_<label>.
function(run expect label)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ${GPT_LORA} ${TINY} ${ARGN}
                  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${label}: gpt_lora failed (${rc}): ${err}")
  endif()
  string(FIND "${out}" "pretrained model loaded from" hit)
  string(FIND "${out}" "pretraining: no cache" miss)
  if(expect STREQUAL "hit" AND (hit EQUAL -1 OR NOT miss EQUAL -1))
    message(FATAL_ERROR "${label}: expected the cache to be reused, output:\n${out}")
  elseif(expect STREQUAL "miss" AND (miss EQUAL -1 OR NOT hit EQUAL -1))
    message(FATAL_ERROR "${label}: expected a cache miss (pretraining again), output:\n${out}")
  endif()
  string(REGEX MATCH "final [^\n]*" final "${out}")
  string(REGEX REPLACE "step_ms [0-9.]+ " "" final "${final}") # a timing, not a result
  set(final_${label} "${final}" PARENT_SCOPE)
  message(STATUS "${label}: ${expect} ok")
endfunction()

run(miss first --commit aaaaaaa)
run(hit same --commit aaaaaaa)
if(NOT final_first STREQUAL final_same)
  message(FATAL_ERROR "the cached model gives another result:\n${final_first}\n${final_same}")
endif()
run(miss other_commit --commit bbbbbbb)
run(miss dirty --commit bbbbbbb-dirty)
run(hit dirty_again --commit bbbbbbb-dirty)
run(miss other_seed --commit bbbbbbb-dirty --pretrain-seed 2)
run(miss other_steps --commit bbbbbbb-dirty --pretrain-seed 2 --pretrain-steps 21)
run(miss other_lr --commit bbbbbbb-dirty --pretrain-seed 2 --pretrain-steps 21 --pretrain-lr 0.002)
run(miss other_size --commit bbbbbbb-dirty --pretrain-seed 2 --pretrain-steps 21 --pretrain-lr 0.002 --dim 16)
# The commit is recorded with the results.
string(FIND "${final_other_size}" "commit bbbbbbb-dirty" recorded)
if(recorded EQUAL -1)
  message(FATAL_ERROR "the commit is missing from the summary line: ${final_other_size}")
endif()
file(REMOVE ${CACHE})
