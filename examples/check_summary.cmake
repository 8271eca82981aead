# Runs sweep_summary.awk on testdata/ and compares with values worked out by
# hand from the fixture CSVs (the comments show the arithmetic).
#   adamw seeds: final train 0.5 and 1.3 -> mean 0.9, std sqrt(0.32) = 0.565685
#                final acc 0.6 and 0.4   -> mean 0.5, std sqrt(0.02) = 0.141421
#                rebounds: s1 2,1,1.5,0.5 -> 0.5; s2 2,1.2,1,1.3 -> 0.3
#                final eval loss 1.2 and 1.0 -> mean 1.1, std 0.141421
#   mgpo: one seed, no rebound, std 0 by convention.
find_program(AWK awk REQUIRED)
file(GLOB csvs ${DATA}/*.csv)
list(SORT csvs)
execute_process(COMMAND ${AWK} -f ${SCRIPT} ${csvs} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "awk failed: ${rc}")
endif()
set(expected
  "4,0.1,adamw,2,0.900000,0.565685,0.500000,0.141421,0.400000,0.141421,1.100000,0.141421"
  "4,0.1,mgpo-rho0.05,1,0.250000,0.000000,0.750000,0.000000,0.000000,0.000000,0.750000,0.000000")
string(REPLACE "\n" ";" lines "${out}")
list(REMOVE_ITEM lines "")
list(SORT lines)
if(NOT "${lines}" STREQUAL "${expected}")
  message(FATAL_ERROR "sweep_summary.awk gave\n${out}\nexpected\n${expected}")
endif()
