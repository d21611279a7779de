#!/usr/bin/env bash
# make fuzz: build every target (libFuzzer through cargo fuzz, no sanitizer: the stable toolchain
# here has none) and run each for FUZZ_SECONDS (or FUZZ_RUNS executions, if sooner), from the
# committed seeds (fuzz/seeds/<target>) and the corpus kept from earlier runs (fuzz/corpus/,
# not committed). A crash, panic, timeout or allocation over 64 MiB fails the run and leaves the
# input in fuzz/artifacts/<target>/. A report per target: executions, coverage, corpus size.
# Usage: fuzz/run.sh [target ...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-60}
RUNS=${FUZZ_RUNS:-0}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//' | sort)
fi
mkdir -p ../target/fuzz
if ! cargo fuzz build -s none >../target/fuzz/build.log 2>&1; then
    tail -40 ../target/fuzz/build.log
    echo "cargo fuzz build failed"
    exit 1
fi
report=${FUZZ_REPORT:-../target/fuzz/report.tsv}
printf 'target\texecutions\texec/s\tcoverage\tfeatures\tcorpus\tseconds\n' > "$report"
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Whichever comes first: FUZZ_SECONDS, or FUZZ_RUNS executions when given.
    limit=(-max_total_time="$SECONDS_EACH")
    if [ "$RUNS" != 0 ]; then limit+=(-runs="$RUNS"); fi
    log=../target/fuzz/$t.log
    start=$(date +%s)
    if ! cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- "${limit[@]}" \
        -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        echo "FAILED: $t (see $log; the input is in fuzz/artifacts/$t/)"
        grep -E "panicked|ERROR|over 64 MiB|deadly signal|timeout" "$log" | head -5
        failed=1
    fi
    execs=$(grep -ho 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
    secs=$(( $(date +%s) - start ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$execs" "$(( execs / (secs > 0 ? secs : 1) ))" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$secs" >> "$report"
done
column -t -s $'\t' "$report"
exit $failed
