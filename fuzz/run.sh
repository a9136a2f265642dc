#!/usr/bin/env bash
# Build every fuzz target, then run each for SECONDS_PER_TARGET (default 30)
# one after another, one libFuzzer process each. Exits non-zero if any target
# crashed; the input that did it is in fuzz/artifacts/<target>/ and the log
# in fuzz/target/logs/<target>.log.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#
# Stable Rust is enough: `--sanitizer none` passes no -Z flags (the targets
# are safe Rust; libFuzzer's coverage comes from -Cpasses=sancov-module,
# which is stable). FUZZ_SANITIZER=address builds with ASan instead, which
# needs -Zsanitizer, so RUSTC_BOOTSTRAP=1 is set for that build only.
# FUZZ_TARGETS="delimited exactly" runs a subset. Corpus: fuzz/corpus/<target>
# (committed seed-* files plus what earlier runs found, which git ignores).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"
case "$seconds" in '' | *[!0-9]*)
    echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac

if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi
command -v c++ >/dev/null || {
    echo "fuzz/run.sh: libfuzzer-sys builds libFuzzer with a C++ compiler; install g++" >&2
    exit 2
}

if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
# -a: debug assertions and overflow checks on, in an optimized build.
flags=(-a --sanitizer "$sanitizer")
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

echo "== building fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${flags[@]}"

# libFuzzer's -print_final_stats line `stat::NAME: VALUE` from a log.
final_stat() { sed -n "s/^stat::$2: *//p" "$1" | tail -1 || true; }

mkdir -p target/logs
failed=()
summary=()
for t in $targets; do
    mkdir -p "corpus/$t"
    log="target/logs/$t.log"
    echo "== $t: ${seconds}s"
    # Without -jobs, libFuzzer is one process on one thread.
    if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        failed+=("$t")
        grep -E -A2 "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | head -6 || true
        grep "Test unit written" "$log" || true
    fi
    # (A crash while loading the corpus leaves no `cov:` line.)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
    summary+=("$(printf '%-16s %-6s runs %-10s exec/s %-7s cov %-5s new %-5s corpus %s' \
        "$t" "$result" "$(final_stat "$log" number_of_executed_units)" "$(final_stat "$log" average_exec_per_sec)" \
        "${cov:-?}" "$(final_stat "$log" new_units_added)" "$(find "corpus/$t" -type f | wc -l)")")
done

echo "== summary (${seconds}s per target, logs in fuzz/target/logs/)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "CRASHED: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay with" \
        "cargo fuzz run -a --sanitizer $sanitizer <target> <input>)" >&2
    exit 1
fi
