#!/usr/bin/env bash
# run.sh: the whole GPU check on a lent GPU machine, from the repository root.
#
#   OUT=/some/dir bash tests/gpu/run.sh     (OUT defaults to ./gpu-out)
#
# Detects the GPU's compute capability, builds for just that arch, runs the gpu
# tests, then every test, then the benchmarks in the build dir, then (when the
# tool is there) compute-sanitizer's memcheck, racecheck, synccheck and initcheck
# over the CUDA op test. Every log goes under $OUT, with summary.txt (date, GPU,
# commit, what passed/failed); PACK=1 packs the logs into $OUT/logs.tgz.
# The machine has no network: nothing is installed; a missing dependency is
# reported in the summary. Knobs: JOBS, CTEST_TIMEOUT (s per test, 300),
# BENCH_TIMEOUT (s per bench, 120), GPU_TESTS (1: the CUDA tests and the sft scenarios),
# FULL_CTEST (1), BENCH (1: the bench_* programs), BENCH_C75 (1: bench_cuda_ops also built for compute_75
# only, to time the T4's code path on this GPU), SANITIZE (1), BENCH_TRAIN (1), PACK (0), T4 (0: 1 adds the
# "T4 on an H100" fit checks on a compute_75-PTX build capped at 15 GiB; T4_TOTAL_TIMEOUT, 540 s).
# Everything at once can take more than the device tool's 10 minutes per command; two calls fit
# (the build is kept between them while the machine stays warm; docs/gpu-log.md, "How to run"):
#   OUT=$OUT PACK=1 SANITIZE=0 bash tests/gpu/run.sh                   (tests, scenarios, benchmarks: ~5 min)
#   OUT=$OUT PACK=1 GPU_TESTS=0 FULL_CTEST=0 BENCH=0 BENCH_TRAIN=0 bash tests/gpu/run.sh   (sanitizers: ~2.5 min)
set -u
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.txt
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
CTEST_TIMEOUT=${CTEST_TIMEOUT:-300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
SANITIZE=${SANITIZE:-1}
FULL_CTEST=${FULL_CTEST:-1}
GPU_TESTS=${GPU_TESTS:-1}
BENCH=${BENCH:-1}
failures=0

say() { echo "$*" | tee -a "$SUMMARY"; }
any_exists() { local f; for f; do [ -e "$f" ] && return 0; done; return 1; }
step() { # step NAME LOGFILE CMD...: run, log, record PASS/FAIL
    local name=$1 log=$2; shift 2
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then say "PASS  $name ($((SECONDS - t0)) s)"; else
        say "FAIL  $name (exit $rc, $((SECONDS - t0)) s; see $(basename "$log"))"
        failures=$((failures + 1))
    fi
    return $rc
}

: >"$SUMMARY"
say "finetune GPU run"
say "date:   $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
say "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
say "host:   $(hostname) ($(nproc 2>/dev/null) cores)"

if ! command -v nvidia-smi >/dev/null; then
    say "FAIL  nvidia-smi not found: no NVIDIA driver on this machine"
    exit 1
fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
say "gpu:    ${GPU:-unknown}"
say "arch:   sm_${CAP:-unknown}"
if ! [[ "$CAP" =~ ^[0-9]+$ ]]; then
    say "FAIL  could not read the compute capability from nvidia-smi"
    exit 1
fi
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null | head -1)
say "nvcc:   ${NVCC:-missing} $($NVCC --version 2>/dev/null | grep -o 'release [0-9.]*')"
say "cmake:  $(cmake --version 2>/dev/null | head -1)"
if [ -z "$NVCC" ]; then
    say "FAIL  nvcc not found: the CUDA toolkit is needed to build the CUDA backend"
    exit 1
fi
# Debian packages carried to a machine that cannot install any (.deps/*.deb; docs/gpu-log.md says how to
# fetch them): libcjson1, libcjson-dev, zlib1g-dev, libcsv3 and libcsv-dev, unpacked over /, as the device
# tool's notes advise.
# Only when something is missing: the machine's own packages are not overwritten needlessly.
if ls "$ROOT"/.deps/*.deb >/dev/null 2>&1 &&
    ! { any_exists /usr/include/zlib.h /usr/local/include/zlib.h &&
        any_exists /usr/include/cjson/cJSON.h /usr/local/include/cjson/cJSON.h &&
        any_exists /usr/include/csv.h /usr/local/include/csv.h; }; then
    if command -v dpkg >/dev/null; then
        for f in "$ROOT"/.deps/*.deb; do dpkg -x "$f" / || say "WARN  could not unpack $(basename "$f")"; done
        ldconfig 2>/dev/null
        say "deps:   unpacked $(ls "$ROOT"/.deps/*.deb | wc -l) carried package(s) from .deps/"
    else
        say "WARN  .deps/*.deb were carried but there is no dpkg to unpack them"
    fi
fi
if ! any_exists /usr/include/zlib.h /usr/local/include/zlib.h; then
    say "FAIL  zlib.h not found (zlib1g-dev): carry it in .deps/ (docs/gpu-log.md, How to run)"
    exit 1
fi
# cJSON is required by CMakeLists (find_path cjson/cJSON.h); there is no vendored copy.
if ! any_exists /usr/include/cjson/cJSON.h /usr/local/include/cjson/cJSON.h &&
    ! find / -path /proc -prune -o -name cJSON.h -path '*cjson*' -print -quit 2>/dev/null | grep -q .; then
    say "FAIL  libcjson-dev is missing (cjson/cJSON.h not found) and this machine has no network to install it;"
    say "      carry libcjson1 and libcjson-dev in .deps/ (docs/gpu-log.md, How to run)"
    exit 1
fi
# libcsv (CSV datasets) is required by CMakeLists (find_path csv.h).
if ! any_exists /usr/include/csv.h /usr/local/include/csv.h; then
    say "FAIL  libcsv-dev is missing (csv.h not found) and this machine has no network to install it;"
    say "      carry libcsv3 and libcsv-dev in .deps/ (docs/gpu-log.md, How to run)"
    exit 1
fi

# The small test assets (tiny-random-llama, tokenizers, dataset rows) are committed (tests/fixtures/assets);
# only what is too large to commit (models/smollm2-135m-instruct) is read from the shared assets (FT_ASSETS),
# beside the repository in CI; a machine that only gets the working tree can have a copy carried in
# .deps/assets. Without them the tests that need the large model skip ("skipped: ..." in their logs).
ASSETS=$ROOT/../shared/assets
[ -d "$ASSETS" ] || ASSETS=$ROOT/.deps/assets
if [ -d "$ASSETS" ]; then say "assets: $ASSETS"; else say "WARN  no shared assets: the tests that need the large model skip"; fi

BUILD=$ROOT/build-gpu-sm$CAP
# (the emulator build is off: this machine has the real thing)
step "configure (CMAKE_CUDA_ARCHITECTURES=$CAP)" "$OUT/configure.log" \
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CAP" -DFT_CUEMU=OFF \
    -DFT_SHARED_ASSETS="$ASSETS" \
    ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} || { say "stopping: configure failed"; exit 1; }
grep -q "CUDA backend ON" "$OUT/configure.log" || say "WARN  configure did not enable the CUDA backend"
step "build (-j$JOBS)" "$OUT/build.log" cmake --build "$BUILD" -j"$JOBS" || { tail -40 "$OUT/build.log"; say "stopping: build failed"; exit 1; }

cd "$BUILD" || exit 1
if [ "$GPU_TESTS" = 1 ]; then
    # The CUDA op test directly, for its per-op error lines (ctest hides a passing test's output).
    if [ -x ./test_cuda_ops ]; then
        step "test_cuda_ops (direct)" "$OUT/test_cuda_ops.log" env FT_SOURCE_DIR="$ROOT" FT_ASSETS="$ASSETS" ./test_cuda_ops
        grep -q "^skipped: " "$OUT/test_cuda_ops.log" && say "WARN  test_cuda_ops skipped itself: the backend saw no usable GPU"
    fi
    # The precision tests directly too: they print the measured errors, loss curves and memory ratio that
    # docs/gpu-log.md records (and their tolerances can be overridden: FT_TOL_BF16, FT_TOL_F16, FT_TOL_TRAIN_*).
    for t in test_cuda_model test_cuda_train; do
        if [ -x ./$t ]; then
            step "$t (direct)" "$OUT/$t.log" env FT_SOURCE_DIR="$ROOT" FT_ASSETS="$ASSETS" ./$t
            grep -E "err|loss|memory|overflow|^skipped: " "$OUT/$t.log" | sed 's/^/      /' | tee -a "$SUMMARY" >/dev/null
        else
            say "FAIL  $t was not built"
            failures=$((failures + 1))
        fi
    done
    step "ctest -L gpu" "$OUT/ctest-gpu.log" ctest -L gpu --output-on-failure --timeout "$CTEST_TIMEOUT"
    grep -E "tests passed|Skipped|Failed|\*\*\*" "$OUT/ctest-gpu.log" | sed 's/^/      /' | tee -a "$SUMMARY" >/dev/null
fi
if [ "$FULL_CTEST" = 1 ]; then
    step "ctest (all)" "$OUT/ctest-all.log" ctest --output-on-failure --timeout "$CTEST_TIMEOUT" -j"$JOBS"
    grep -E "tests passed|\(Failed\)|\(Skipped\)|\(Timeout\)|Not Run" "$OUT/ctest-all.log" | sed 's/^/      /' | tee -a "$SUMMARY" >/dev/null
fi

# The command-line scenarios the emulator runs in CI (tests/cli/cuemu_sft.sh), here with the real binary:
# fp16 loss scaling, exact resume after SIGKILL, activation offload bit-identical, QLoRA and DPO in bf16.
if [ "$GPU_TESTS" = 1 ]; then
    step "sft scenarios on the GPU (tests/cli/cuemu_sft.sh)" "$OUT/sft_scenarios.log" \
        env FT_BIN_CUEMU="$BUILD/finetune" FT_SFT_ON_GPU=1 FT_SOURCE_DIR="$ROOT" bash "$ROOT/tests/cli/cuemu_sft.sh"
    grep -E "^(ok|FAIL)" "$OUT/sft_scenarios.log" | sed 's/^/      /' | tee -a "$SUMMARY" >/dev/null
fi
# Data parallelism over NCCL: --nproc 1 end to end (and --nproc 2 where there are two GPUs).
if [ "$GPU_TESTS" = 1 ]; then
    step "data parallel over NCCL (tests/gpu/dist_nccl.sh)" "$OUT/dist_nccl.log" \
        env FT_BIN="$BUILD/finetune" FT_SOURCE_DIR="$ROOT" bash "$ROOT/tests/gpu/dist_nccl.sh"
    grep -E "^(ok|FAIL|skipped)" "$OUT/dist_nccl.log" | sed 's/^/      /' | tee -a "$SUMMARY" >/dev/null
fi

# (bench_tokenizer is a CPU benchmark that takes a tokenizer and a corpus: bench/tokenizer.md)
for b in ./bench_cuda_ops ./bench_cpu_ops ./bench_sft_batches; do
    [ "$BENCH" = 1 ] && [ -x "$b" ] || continue
    n=$(basename "$b")
    step "$n" "$OUT/$n.log" timeout "$BENCH_TIMEOUT" "$b"
done

# The attention targets (issue 18) in the benchmark's log, and the same benchmark built for compute_75 only
# (PTX the driver compiles for this GPU): its F16 lines time the code a T4 runs, to compare with this build's.
# BENCH_C75=0 skips the second build (on an sm_75 GPU the first build is that code already).
if [ "$BENCH" = 1 ] && [ -f "$OUT/bench_cuda_ops.log" ]; then
    grep -E "^attention targets|4096\^3|^attention (fwd|bwd) (BF16|F16) (tensor cores|scalar)" "$OUT/bench_cuda_ops.log" |
        sed 's/^/      /' | tee -a "$SUMMARY" >/dev/null
fi
if [ "$BENCH" = 1 ] && [ "${BENCH_C75:-1}" = 1 ] && [ "$CAP" -gt 75 ]; then
    B75=$ROOT/build-gpu-compute75
    if step "build bench_cuda_ops for compute_75 only" "$OUT/build-compute75.log" sh -c \
        "cmake -S '$ROOT' -B '$B75' -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=75-virtual -DFT_CUEMU=OFF ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} && cmake --build '$B75' -j$JOBS --target bench_cuda_ops"; then
        step "bench_cuda_ops (compute_75 code)" "$OUT/bench_cuda_ops_compute75.log" timeout "$BENCH_TIMEOUT" "$B75/bench_cuda_ops"
        grep -E "^attention (fwd|bwd) F16 (tensor cores|scalar)" "$OUT/bench_cuda_ops_compute75.log" |
            sed 's/^/      compute_75: /' | tee -a "$SUMMARY" >/dev/null
    fi
fi

# compute-sanitizer over the CUDA op test: memcheck (out-of-bounds and misaligned accesses), racecheck
# (shared-memory hazards), synccheck (barriers), initcheck (reads of memory never written). API errors are
# not reported: the test asks for more memory than the GPU has on purpose, to check the error path.
if [ "$SANITIZE" = 1 ] && [ -x ./test_cuda_ops ]; then
    CS=$(command -v compute-sanitizer || ls "$(dirname "$NVCC")"/compute-sanitizer 2>/dev/null | head -1)
    if [ -n "$CS" ]; then
        for tool in memcheck racecheck synccheck initcheck; do
            step "compute-sanitizer $tool test_cuda_ops" "$OUT/sanitize-$tool.log" \
                timeout 400 "$CS" --tool "$tool" --report-api-errors no --error-exitcode 9 ./test_cuda_ops
            grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitize-$tool.log" | sed 's/^/      /' |
                tee -a "$SUMMARY" >/dev/null
        done
    else
        say "SKIP  compute-sanitizer not found"
    fi
fi

# Training speed and memory, ours vs PyTorch when it is importable here (bench/train_gpu.sh): its table
# and logs go to $OUT/bench-gpu/. BENCH_TRAIN=0 skips it.
if [ "${BENCH_TRAIN:-1}" = 1 ] && [ -f "$ROOT/bench/train_gpu.sh" ]; then
    step "bench/train_gpu.sh" "$OUT/train_gpu.log" timeout 450 env OUT="$OUT" bash "$ROOT/bench/train_gpu.sh" "$BUILD"
    sed 's/^/      /' "$OUT/bench-gpu/summary.md" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
fi

# T4=1: "a T4 on an H100" (bench/train_gpu.sh, T4 mode): a second build, -DFT_CUDA_T4_PTX=ON (compute_75 PTX only,
# JIT-compiled here and run as sm_75: fp16, the T4's kernels, device memory capped at 15 GiB by our allocator),
# then the three fit checks with tokens/s: Danube3-4B-shape QLoRA at 2048, the longest Danube2-1.8B-shape QLoRA
# sequence (offload, doubling until the cap), Danube3-500M-shape full at 2048. Table in $OUT/bench-gpu/t4.md.
if [ "${T4:-0}" = 1 ]; then
    BUILD_T4=$ROOT/build-gpu-t4
    if step "configure the T4 build (FT_CUDA_T4_PTX=ON)" "$OUT/configure-t4.log" \
        cmake -S "$ROOT" -B "$BUILD_T4" -DCMAKE_BUILD_TYPE=Release -DFT_CUDA_T4_PTX=ON -DFT_CUEMU=OFF \
        ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
        step "build the T4 build" "$OUT/build-t4.log" cmake --build "$BUILD_T4" -j"$JOBS" --target finetune bench_sft_batches; then
        step "bench/train_gpu.sh T4=1" "$OUT/train_gpu_t4.log" timeout "${T4_TOTAL_TIMEOUT:-540}" \
            env OUT="$OUT" T4=1 bash "$ROOT/bench/train_gpu.sh" "$BUILD_T4"
        sed 's/^/      /' "$OUT/bench-gpu/t4.md" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
    fi
fi

say "result: $failures step(s) failed"
# PACK=1: every log but summary.txt into one logs.tgz (the device tool returns only a few files per call)
if [ "${PACK:-0}" = 1 ]; then
    (cd "$OUT" && tar czf logs.tgz --exclude=summary.txt --exclude=logs.tgz -- * &&
        find . -mindepth 1 -not -name logs.tgz -not -name summary.txt -delete)
fi
[ $failures -eq 0 ]
