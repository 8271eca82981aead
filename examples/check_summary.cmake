# Runs sweep_summary.awk on testdata/ and compares with values worked out by
# hand from the fixture CSVs (the comments show the arithmetic).
#   adamw seeds: final train 0.5 and 1.3 -> mean 0.9, std sqrt(0.32) = 0.565685
#                peak acc 0.7 (step 10) and 0.4 -> mean 0.55, std sqrt(0.045) = 0.212132
#                final acc 0.6 and 0.4   -> mean 0.5, std sqrt(0.02) = 0.141421
#                rebounds: s1 2,1,1.5,0.5 -> 0.5; s2 2,1.2,1,1.3 -> 0.3
#                final eval loss 1.2 and 1.0 -> mean 1.1, std 0.141421
#   mgpo: one seed, no rebound, std 0 by convention.
#   paired (sweep_paired.awk), mgpo seed 1 against adamw seed 1:
#                train 0.25 - 0.5 = -0.25, acc 0.75 - 0.6 = 0.15,
#                rebound 0 - 0.5 = -0.5; better on all three in 1 of 1 pairs;
#                peak acc 0.75 - 0.7 = 0.05, higher in 1 of 1.
find_program(AWK awk REQUIRED)
file(GLOB csvs ${DATA}/*.csv)
list(SORT csvs)
set(runs_file ${CMAKE_CURRENT_BINARY_DIR}/check_summary_runs.csv)
file(REMOVE ${runs_file})

# check(<output> <expected lines...>): same lines, in any order.
function(check out)
  string(REPLACE "\n" ";" lines "${out}")
  list(REMOVE_ITEM lines "")
  list(SORT lines)
  set(expected ${ARGN})
  list(SORT expected)
  if(NOT "${lines}" STREQUAL "${expected}")
    message(FATAL_ERROR "got\n${out}\nexpected\n${expected}")
  endif()
endfunction()

execute_process(COMMAND ${AWK} -v runs_out=${runs_file} -f ${SCRIPT_DIR}/sweep_summary.awk ${csvs}
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "sweep_summary.awk failed: ${rc}")
endif()
check("${out}"
  "4,0.1,adamw,2,0.900000,0.565685,0.500000,0.141421,0.400000,0.141421,1.100000,0.141421,0.550000,0.212132"
  "4,0.1,mgpo-rho0.05,1,0.250000,0.000000,0.750000,0.000000,0.000000,0.000000,0.750000,0.000000,0.750000,0.000000")

execute_process(COMMAND ${AWK} -f ${SCRIPT_DIR}/sweep_paired.awk ${runs_file}
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "sweep_paired.awk failed: ${rc}")
endif()
check("${out}" "4,0.1,mgpo-rho0.05,1,-0.250000,0.150000,-0.500000,1,1,1,0.050000,1")
