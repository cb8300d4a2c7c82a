#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what is missing (tests/deps.sh), build the CPU and
# (when nvcc is found) CUDA code in build/, run ctest, and list the skipped tests with their reasons.
#
#   bash tests/run.sh          the suite (every label: unit, golden, cuemu, gpu)
#   bash tests/run.sh --all    first the suite under AddressSanitizer/UBSan and the fuzzers (20 s each),
#                              then the suite: what CI runs (.ci/run)
#
# Large assets (the real model) are read from FT_ASSETS (default ../shared/assets); a test without them
# skips and says how to supply them. The last line is "tests: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
case "${1:-}" in
  --all) all=1 ;;
  "") ;;
  -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "tests/run.sh: unknown option $1 (use --all or nothing)" >&2; exit 2 ;;
esac
source tests/deps.sh
ft_deps "$([ $all = 1 ] && echo all || echo test)"
jobs=$(nproc)

if [ $all = 1 ]; then
  # (the long end-to-end scripts and most emulated-GPU tests run in the main suite below: under ASan they
  # take minutes)
  echo "== the suite under AddressSanitizer + UBSan (CPU build)"
  cmake -B build-asan -S . -DFT_CUDA=OFF -DFT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug > /dev/null
  cmake --build build-asan -j"$jobs" > /dev/null
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE gpu \
    -E "sft_resume|chat_pipeline|cli_cuemu|cuemu_test_cuda_(ops|train)|_sm75|fault_safety|cli_gguf_(sft|dpo)|cli_dist_mpi"
  echo "== libFuzzer targets, 20 s each"
  CC=clang cmake -B build-fuzz -S . -DFT_CUDA=OFF -DFT_CUEMU=OFF -DFT_FUZZ=ON > /dev/null
  cmake --build build-fuzz -j"$jobs" > /dev/null
  ctest --test-dir build-fuzz --output-on-failure -L fuzz
fi

echo "== the suite (CPU + CUDA build)"
mkdir -p build
cmake -B build -S . > build/configure.log 2>&1 || { cat build/configure.log >&2; exit 1; }
grep -E '^-- finetune:' build/configure.log || true
cmake --build build -j"$jobs"
rc=0
ctest --test-dir build --output-on-failure -j"$jobs" | tee build/ctest.out || rc=$?

# Skipped tests and why: each prints one "skipped: <reason>" line, which ctest keeps in LastTest.log.
passed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' build/ctest.out || true)
failed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout)|Not Run' build/ctest.out || true)
skipped_names=$(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) .*\*\*\*Skipped.*/\1/p' build/ctest.out)
skipped=0
if [ -n "$skipped_names" ]; then
  echo
  echo "Skipped tests and why:"
  for name in $skipped_names; do
    skipped=$((skipped + 1))
    reason=$(awk -v t="$name" '
      $0 ~ "^[0-9]+/[0-9]+ Test: " { cur = $3; next }
      cur == t && /^skipped: / { sub(/^skipped: /, ""); print; exit }' build/Testing/Temporary/LastTest.log)
    echo "  $name: ${reason:-(no reason printed)}"
  done
fi
echo
[ "$rc" = 0 ] || [ "$failed" != 0 ] || failed=1
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
