# arms.sh: the arms of docs/results.md's main grid, as gpt_lora flags; sourced
# by main_grid.sh and cost.sh so both run exactly the same configurations.
# flags_of ARM prints the flags of one arm label: adamw, look-rho<R>
# (MGPO, look-ahead sign), asc-rho<R> (the paper's Eq. 3 ascent sign),
# random-rho<R> (random direction), apnoff-rho<R> (no gradient-norm EMA
# scaling), nlu / nlg (libmgpo's paper profiles).  Unknown labels fail.
flags_of() {
    case $1 in
        adamw) echo "--optimizer adamw" ;;
        look-rho*) echo "--optimizer mgpo --rho ${1#look-rho}" ;;
        asc-rho*) echo "--optimizer mgpo --sign ascent --rho ${1#asc-rho}" ;;
        random-rho*) echo "--optimizer mgpo --direction random --rho ${1#random-rho}" ;;
        apnoff-rho*) echo "--optimizer mgpo --apn off --rho ${1#apnoff-rho}" ;;
        nlu) echo "--optimizer mgpo --profile nlu-paper" ;;
        nlg) echo "--optimizer mgpo --profile nlg-paper" ;;
        *) echo "arms.sh: unknown arm $1" >&2; return 1 ;;
    esac
}
