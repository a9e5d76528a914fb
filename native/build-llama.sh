#!/usr/bin/env bash
# Build a llama.cpp release (the source bundled in node-llama-cpp's npm
# package; by default 3.22.1, llama.cpp 0.5.0) as shared libraries plus
# llama-completion, llama-server and llama-bench, for side-by-side
# comparisons with kvtrim.
#
# usage: native/build-llama.sh [--cuda] [--rpc] [--jobs N] [--work DIR] [--node-llama-cpp V]
#                              [--tools "llama-completion ..."] OUT_DIR
#
# --rpc builds ggml's RPC backend into libggml (libggml-rpc.so) and the
# ggml-rpc-server that serves a host's devices to it (--rpc host:port).
#
# OUT_DIR receives lib*.so and the llama-* tools in one folder, so that
# `kvtrim --lib OUT_DIR` loads exactly the library the tools use.
# Needs: npm, git, cmake, a C/C++ compiler (Debian: npm git cmake build-essential).
set -euo pipefail

cuda=0
rpc=0
jobs=$(nproc 2>/dev/null || echo 2)
work=""
nlc=3.22.1
tools="llama-completion llama-server llama-bench"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) cuda=1 ;;
    --rpc) rpc=1 ;;
    --jobs) jobs="$2"; shift ;;
    --work) work="$2"; shift ;;
    --node-llama-cpp) nlc="$2"; shift ;;
    --tools) tools="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "build-llama: unknown option $1" >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done
[ -n "$out" ] || { echo "build-llama: missing OUT_DIR (see --help)" >&2; exit 2; }
if [ -z "$work" ]; then
  work="${TMPDIR:-/tmp}/kvtrim-llama-build"
  [ "$nlc" = 3.22.1 ] || work="$work-$nlc"
fi

need() { command -v "$1" >/dev/null 2>&1 || { echo "build-llama: $1 not found: install the Debian package $2 (apt-get install $2)" >&2; exit 3; }; }
need npm npm
need git git
need cmake cmake
need c++ build-essential

mkdir -p "$work" "$out"
out=$(cd "$out" && pwd)
src=$("$(dirname "$0")/llama-source.sh" "$work" "$nlc")

flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON -DCMAKE_INSTALL_RPATH='$ORIGIN'
       -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON)
if [ "$cuda" = 1 ]; then
  need nvcc nvidia-cuda-toolkit
  flags+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-native}")
fi
# On a CPU with AMX, 0.5.0 built with -march=native crashes at the first
# decode of q8_0 weights, in ggml's AMX matrix product (docs/LLAMA-FACTS.md;
# the npm build's AMX code runs). Compile without the AMX instructions on
# every compiler that knows them: a launcher puts -mno-amx-* after every
# compile command's flags, where -march=native cannot turn them back on.
# Asking the compiler, not /proc/cpuinfo, covers a kernel that hides the
# CPU's AMX flags while -march=native still finds them; where the CPU has
# no AMX the flags change nothing.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# shellcheck disable=SC2086
if echo 'int x;' | c++ -x c++ $no_amx -c - -o /dev/null 2>/dev/null; then
  launcher="$work/cc-no-amx"
  printf '#!/bin/sh\nexec "$@" %s\n' "$no_amx" > "$launcher"
  chmod +x "$launcher"
  flags+=("-DCMAKE_C_COMPILER_LAUNCHER=$launcher" "-DCMAKE_CXX_COMPILER_LAUNCHER=$launcher")
  echo "build-llama: building without AMX instructions (ggml's native AMX code crashes on q8_0 weights)" >&2
fi
targets="llama $tools"
if [ "$rpc" = 1 ]; then
  flags+=(-DGGML_RPC=ON)
  targets="$targets ggml-rpc ggml-rpc-server"
  tools="$tools ggml-rpc-server"
else
  flags+=(-DGGML_RPC=OFF)
fi
build="$work/build-$([ "$cuda" = 1 ] && echo cuda || echo cpu)"
# has_amx_code FILE...: whether a CPU backend library holds ggml's AMX
# matrix product (not grep -q: under pipefail nm's SIGPIPE reads as no match).
has_amx_code() {
  local so
  for so in "$@"; do
    [ -e "$so" ] && command -v nm >/dev/null && nm -D "$so" | grep ggml_backend_amx_mul_mat >/dev/null && return 0
  done
  return 1
}
# A launcher added to an existing build folder recompiles nothing: start
# afresh where the folder was configured without it, or still holds a
# CPU backend built with AMX.
if [ -n "${launcher:-}" ] && [ -f "$build/CMakeCache.txt" ]; then
  # shellcheck disable=SC2046
  if ! grep -q cc-no-amx "$build/CMakeCache.txt" || has_amx_code $(find "$build" -name 'libggml-cpu*.so*' -type f); then
    echo "build-llama: $build was built with AMX instructions; building it again" >&2
    rm -rf "$build"
  fi
fi
cmake -S "$src" -B "$build" "${flags[@]}" >&2
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" --target $targets >&2
for tool in $tools; do cp -a "$build/bin/$tool" "$out"/; done
# Shared libraries land beside the tools in bin/ on this version; fall back to a search.
find "$build" -name 'lib*.so*' -exec cp -a {} "$out"/ \;
# Check the launcher worked: no AMX matrix product in the CPU backend.
if [ -n "${launcher:-}" ] && has_amx_code "$out"/libggml-cpu*.so; then
  echo "build-llama: $out has ggml's AMX code, which crashes on q8_0 weights; remove $build and build again" >&2
  exit 1
fi
echo "$out"
