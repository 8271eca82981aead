# ctest example_gpt_lora_analyse: analyse.py on hand-made runs whose answer
# is worked out by hand.  Three seeds; MGPO minus AdamW on the test loss is
# +0.1, +0.2, +0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.4641;
# two-sided p with 2 degrees of freedom = 1 - t / sqrt(t^2 + 2) = 0.0742;
# 95 % CI 0.2 -+ 4.3027 * 0.1 / sqrt 3 = [-0.0484, +0.4484]; one comparison,
# so Holm leaves p alone; MGPO lower on 0 of 3 seeds.  Gap (test - train,
# train 3.9 everywhere) moves by the same; rebound +0.01 each: sd 0, CI
# [+0.0100, +0.0100].
set(dir ${WORK}/analyse-fixture)
file(REMOVE_RECURSE ${dir})
file(MAKE_DIRECTORY ${dir}/runs)
file(WRITE ${dir}/choices.txt "main_grid.sh: S1 lr* = 0.01 (validation)\nmain_grid.sh: S1 rho* = 0.05 (look-ahead), rho*_a = 0.05 (ascent)\n")
foreach(seed 1 2 3)
  file(WRITE ${dir}/runs/S1_r8_lr0.01_adamw_s${seed}.log
       "final test_loss 4.0000 test_se 0.01 train_loss 3.9000 eval_loss 4.0 eval_se 0.01 best_eval_loss 4.0 max_rebound 0.0200 initial_train_loss 4.5 step_ms 10.0 optimizer_bytes 1000 mgpo_version 0.3.0 commit abc products blas\n")
  file(WRITE ${dir}/runs/S1_r8_lr0.01_look-rho0.05_s${seed}.log
       "final test_loss 4.${seed}000 test_se 0.01 train_loss 3.9000 eval_loss 4.0 eval_se 0.01 best_eval_loss 4.0 max_rebound 0.0300 initial_train_loss 4.5 step_ms 12.0 optimizer_bytes 1500 mgpo_version 0.3.0 commit abc products blas\n")
  # Exploratory: at lr 0.03 (not lr*) look-ahead minus AdamW is -0.1, -0.2,
  # -0.3: the mirror image of the above, lower on 3 of 3 seeds.
  math(EXPR down "10 - ${seed}")
  file(WRITE ${dir}/runs/S1_r8_lr0.03_adamw_s${seed}.log
       "final test_loss 4.0000 test_se 0.01 train_loss 3.9000 eval_loss 4.0 eval_se 0.01 best_eval_loss 4.0 max_rebound 0.0200 initial_train_loss 4.5 step_ms 10.0 optimizer_bytes 1000 mgpo_version 0.3.0 commit abc products blas\n")
  file(WRITE ${dir}/runs/S1_r8_lr0.03_look-rho0.05_s${seed}.log
       "final test_loss 3.${down}000 test_se 0.01 train_loss 3.9000 eval_loss 4.0 eval_se 0.01 best_eval_loss 4.0 max_rebound 0.0300 initial_train_loss 4.5 step_ms 12.0 optimizer_bytes 1500 mgpo_version 0.3.0 commit abc products blas\n")
endforeach()
execute_process(COMMAND ${PYTHON} ${SCRIPT} ${dir} OUTPUT_VARIABLE out RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "analyse.py failed: ${err}")
endif()
set(want "| S1 (r 8) | look-rho0.05 | adamw | 3 | +0.2000 [-0.0484, +0.4484] | 0.0742 | 0.0742 | 0/3 | +0.2000 [-0.0484, +0.4484] | +0.0100 [+0.0100, +0.0100] | +0.0000 [+0.0000, +0.0000] |")
string(FIND "${out}" "${want}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "expected the line\n${want}\nin\n${out}")
endif()
set(want_cost "| S1 r8 lr0.01 | look-rho0.05 | 3 | 4.2000 ± 0.1000 | +0.3000 | 12.0 | +20.0 % | 1500 | +500 |")
string(FIND "${out}" "${want_cost}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "expected the line\n${want_cost}\nin\n${out}")
endif()
set(want_explore "| S1 (r 8) | 0.03 | look-rho0.05 | 3 | -0.2000 [-0.4484, +0.0484] | 0.0742 | 3/3 | -0.2000 [-0.4484, +0.0484] | +0.0100 [+0.0100, +0.0100] | +0.0000 [+0.0000, +0.0000] |")
string(FIND "${out}" "${want_explore}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "expected the line\n${want_explore}\nin\n${out}")
endif()
