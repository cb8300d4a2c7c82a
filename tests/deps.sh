# deps.sh: the system packages finetune needs, installed when missing. Sourced by recipes/quickstart.sh
# and tests/run.sh (and so by .ci/run, which installs nothing else):
#
#   ft_deps build   a C compiler, make, CMake, cJSON, zlib, libcsv    (the library and the binary)
#   ft_deps test    + a C++17 compiler                                 (the CUDA emulator the GPU tests run on)
#   ft_deps all     + clang and its runtime libraries                  (ASan/UBSan and libFuzzer: tests/run.sh --all)
#
# On Debian/Ubuntu as root the missing ones are installed with apt-get; otherwise the one command to run
# is printed and the script stops. Elsewhere the list is printed and CMake's own check has the last word.
# The CUDA toolkit, when installed in /usr/local/cuda, is put on PATH so the CUDA backend is built too.

ft_deps() {
  local level=$1 cmds=() pkgs=()
  command -v cc > /dev/null || { cmds+=(cc); pkgs+=(gcc); }
  command -v make > /dev/null || { cmds+=(make); pkgs+=(make); }
  command -v cmake > /dev/null || { cmds+=(cmake); pkgs+=(cmake); }
  if [ "$level" != build ]; then
    command -v c++ > /dev/null || { cmds+=(c++); pkgs+=(g++); }
  fi
  if [ "$level" = all ]; then
    command -v clang > /dev/null || { cmds+=(clang); pkgs+=(clang); }
  fi
  if ! command -v dpkg > /dev/null; then
    if [ ${#cmds[@]} -gt 0 ]; then
      echo "deps: missing ${cmds[*]}; finetune also needs the cJSON, zlib and libcsv development files" >&2
      echo "deps: (not a Debian system: install them with your package manager, then run this again)" >&2
      return 1
    fi
    return 0
  fi
  local p
  for p in libcjson-dev zlib1g-dev libcsv-dev; do
    dpkg -s "$p" > /dev/null 2>&1 || pkgs+=("$p")
  done
  ft_deps_install "${pkgs[@]}" || return 1
  if [ "$level" = all ]; then
    # libFuzzer and the sanitizer runtimes come in a package named after clang's major version
    local major rt
    major=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
    rt=libclang-rt-$major-dev
    if [ -n "$major" ] && ! dpkg -s "$rt" > /dev/null 2>&1; then
      if apt-cache show "$rt" > /dev/null 2>&1 || [ "$(id -u)" = 0 ]; then
        ft_deps_install "$rt" || true # older releases ship the runtimes inside clang itself
      fi
    fi
  fi
  if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  return 0
}

# ft_deps_install PKG...: apt-get install as root; else print the command and fail.
ft_deps_install() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages: $*" >&2
    echo "deps: install them with:  sudo apt-get install -y $*" >&2
    echo "deps: then run this again." >&2
    return 1
  fi
  echo "deps: installing $*" >&2
  if [ -z "${FT_DEPS_UPDATED:-}" ]; then
    apt-get update -qq || { echo "deps: apt-get update failed" >&2; return 1; }
    FT_DEPS_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > /dev/null ||
    { echo "deps: apt-get install $* failed" >&2; return 1; }
}
