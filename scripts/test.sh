#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it (see README.md).
#
#   1. setup.sh --deps (idempotent install of every dependency)
#   2. build-asan/: gcc, -Werror, ASan + UBSan; every unit and integration test under ctest
#   3. build-fuzz/: clang libFuzzer targets (ASan + UBSan), each run briefly from its checked-in
#      seed corpus (SG_FUZZ_SECONDS, default 10)
#
# Extra arguments go to both ctest runs (e.g. -R http).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" --deps
jobs=$(nproc)

cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DSG_WERROR=ON -DSG_SANITIZE=ON >/dev/null
cmake --build "$root/build-asan" -j "$jobs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$root/build-asan" && ctest --output-on-failure -j "$jobs" "$@")

CC=clang cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DSG_SANITIZE=ON -DSG_FUZZ=ON \
  -DSG_FUZZ_SECONDS="${SG_FUZZ_SECONDS:-10}" >/dev/null
cmake --build "$root/build-fuzz" -j "$jobs"
(cd "$root/build-fuzz" && ctest --output-on-failure -L fuzz "$@")
echo "test.sh: all tests passed"
