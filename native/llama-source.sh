#!/bin/sh
# Fetch a llama.cpp release's source (the git bundle inside node-llama-cpp's
# npm package) into WORK/llama.cpp unless it is there, and print its path.
# build-llama.sh builds from it; .ci/run takes llama-server's test suite
# (tools/server/tests) from it.
#
#   native/llama-source.sh WORK [NODE_LLAMA_CPP_VERSION]
#
# NODE_LLAMA_CPP_VERSION picks the release (default 3.22.1, llama.cpp 0.5.0;
# each native/manifest-*.txt names its package). Needs: npm, git.
set -eu
work=${1:?usage: llama-source.sh WORK [NODE_LLAMA_CPP_VERSION]}
version=${2:-3.22.1}
pkg=node-llama-cpp@$version
for tool in npm git; do
  command -v "$tool" >/dev/null 2>&1 || { echo "llama-source: $tool not found: install the Debian package $tool" >&2; exit 3; }
done
mkdir -p "$work"
work=$(cd "$work" && pwd)
src="$work/llama.cpp"
if [ ! -f "$src/include/llama.h" ]; then
  echo "llama-source: fetching $pkg source bundle" >&2
  (cd "$work" && npm pack --silent "$pkg" >/dev/null)
  tar xzf "$work/node-llama-cpp-$version.tgz" -C "$work" package/llama/gitRelease.bundle
  rm -rf "$src"
  git clone -q "$work/package/llama/gitRelease.bundle" "$src"
fi
echo "$src"
