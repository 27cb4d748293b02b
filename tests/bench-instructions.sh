#!/usr/bin/env bash
# Instructions per record of the Rust transform and of the same work natively (the plugin
# benchmark's records, batch 100), counted by valgrind: unlike times, the counts do not move with
# the noise of a shared machine, so a change to the guest or the host can be judged on one run.
#   tests/bench-instructions.sh [native rust-transform ...]   (BENCH_PROFILE names)
# The JavaScript and Python guests can be named too, but their counts under valgrind are far
# from their times (10.5 million instructions per JavaScript record): compare those by time.
# Needs valgrind (apt-get install valgrind) and the guests built (guest-examples/build.sh,
# build-js-python.sh --aot). Each path runs twice under callgrind, with 2 and 12 passes over the
# 1,000 records; the difference over 10,000 records leaves out start-up and compilation.
# Under valgrind the host's SHA-256 runs without the CPU's SHA instructions (about 5,400 more
# instructions per record, on every path alike).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
bench=$(cargo bench -p replicator --bench plugins --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
[[ -x $bench ]] || { echo "cannot find the plugin benchmark's binary" >&2; exit 1; }
count() { # count PATH PASSES: instructions of one run
    BENCH_PROFILE=$1 BENCH_PASSES=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" 2>&1 >/dev/null |
        sed -n 's/.*refs: *//p' | tr -d ,
}
# Compiled guests are cached so the counted runs do not run Cranelift. The cache is filled under
# valgrind too: the CPU it shows differs from the real one, so artifacts made outside it don't load.
export REPLICATOR_PLUGIN_CACHE=$ROOT/target/plugin-cache-bench
paths=("$@")
((${#paths[@]})) || paths=(native rust-transform)
native=
for path in "${paths[@]}"; do
    [[ $path == native ]] || count "$path" 0 >/dev/null
    per=$(( ($(count "$path" 12) - $(count "$path" 2)) / 10000 ))
    [[ $path == native ]] && native=$per
    if [[ -n $native && $path != native ]]; then
        awk -v p="$path" -v n="$per" -v b="$native" 'BEGIN { printf "%-18s %8d instructions/record (%.2fx native)\n", p, n, n / b }'
    else
        printf '%-18s %8d instructions/record\n' "$path" "$per"
    fi
done
