#!/usr/bin/env bash
# The quick start, from a fresh machine: install what is missing (tests/deps.sh), build, and fine-tune the
# tiny model shipped in recipes/quickstart/ on the OpenOrca-style sample beside it (recipes/quickstart-sft.json).
# Extra arguments are recipe overrides, e.g. `bash recipes/quickstart.sh max_steps=10`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
ft_deps build
mkdir -p build
cmake -B build -S . > build/configure.log 2>&1 || { cat build/configure.log >&2; exit 1; }
grep -E "^-- finetune:" build/configure.log || true
cmake --build build -j"$(nproc)"
./build/finetune sft recipes/quickstart-sft.json "$@"
