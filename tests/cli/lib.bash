# lib.bash: helpers the CLI test scripts share, sourced by them (not a test itself: ctest runs tests/cli/*.sh).

# skip REASON...: print one line "skipped: REASON" (the test runner lists these lines) and exit 77, which
# ctest reports as skipped. REASON says what is missing and, where the user can supply it, how.
skip() { echo "skipped: $*"; exit 77; }

# The small committed assets (real tokenizers, dataset rows, tiny-random-llama; tests/fixtures/assets/
# PROVENANCE.md): always there, so a missing one is a failure, never a skip.
ASSETS_DIR=${FT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/tests/fixtures/assets

# large_asset REL WHAT: an asset too large to commit (models/smollm2-135m-instruct/...), read from
# $FT_ASSETS (default ../shared/assets; ctest sets it from the CMake variable FT_SHARED_ASSETS). Sets
# LARGE_ASSET to its path; when it is absent, skips the test with one line naming WHAT and the path tried.
# Call it directly (not in $(...)), so that the skip ends the script.
large_asset() {
  LARGE_ASSET=${FT_ASSETS:-../shared/assets}/$1
  [ -e "$LARGE_ASSET" ] ||
    skip "$2 ($LARGE_ASSET); set FT_ASSETS=/path/to/shared/assets (it needs $1) to run it"
}

# check NAME EXPR: evaluate EXPR; print "ok   NAME" or "FAIL: NAME" (and set fail=1 for the script's exit).
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; else echo "ok   $1"; fi; }

# metrics.jsonl $1 without the timing columns (tokens_per_s, mem_gib), which legitimately differ between runs.
norm() { sed -E 's/,"tokens_per_s":[^,}]*//; s/,"mem_gib":[^,}]*//' "$1"; }

# The newest complete checkpoint step of run dir $1 (0 if none).
latest_step() {
  local s
  s=$(ls "$1/checkpoints" 2> /dev/null | grep -E '^step-[0-9]+$' | sort | tail -1 | sed 's/^step-0*//')
  echo "${s:-0}"
}

# kill_at DIR STEP EXTRA [ARGS...]: start `$FT sft recipe.json ARGS` in run dir DIR (log appended to DIR/log),
# wait until a checkpoint with step >= STEP exists (plus EXTRA seconds), then SIGKILL it. Prints "killed", or
# "finished(STATUS)" when the run ended first. Uses the script's FT and BG (its EXIT trap kills $BG);
# KILL_POLLS bounds the wait in 10 ms polls (default 6000: a minute).
kill_at() {
  local dir=$1 at=$2 extra=$3
  shift 3
  (cd "$dir" && exec "$FT" sft recipe.json "$@" >> log 2>&1) &
  BG=$!
  local n=0
  while kill -0 "$BG" 2> /dev/null && [ "$(latest_step "$dir/run")" -lt "$at" ] && [ $n -lt "${KILL_POLLS:-6000}" ]; do
    sleep 0.01
    n=$((n + 1))
  done
  [ "$extra" != 0 ] && sleep "$extra"
  kill -9 "$BG" 2> /dev/null
  wait "$BG"
  local st=$?
  BG=
  if [ $st = 137 ]; then echo killed; else echo "finished($st)"; fi
}
