#!/usr/bin/env bash
# Build llama-cpp-python[server] from source once, cache the wheel, and pip-install it.
#
# Why from source with explicit flags: the default build uses -march=native, and on the CI CPU
# that build segfaults in ggml's AMX matmul on any decode longer than one token. A portable
# x86-64 build with AVX2/FMA/F16C works; AVX512 is enabled only on CPUs that report avx512f
# (turning it on elsewhere makes an unusable library). The flags are part of the cache key.
#
# Usage: scripts/build_llama_cpp.sh [python]   (default: python on PATH; ~5 min on 2 cores)
set -euo pipefail

PY=${1:-python}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
CACHE=${STABLEPROMPT_WHEEL_CACHE:-$HOME/.cache/stableprompt/wheels}

FLAGS="-DGGML_NATIVE=OFF"
TAG=generic
if [ "$(uname -m)" = x86_64 ]; then
    FLAGS="$FLAGS -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    TAG=avx2
    if grep -qw avx512f /proc/cpuinfo; then
        FLAGS="$FLAGS -DGGML_AVX512=ON"
        TAG=avx512
    fi
fi
DIR="$CACHE/llama-cpp-python-$VERSION-$TAG-$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

if ! ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $VERSION with CMAKE_ARGS=\"$FLAGS\" into $DIR" >&2
    mkdir -p "$DIR"
    TMP=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PY" -m pip wheel --no-deps --no-cache-dir -w "$TMP" "llama-cpp-python==$VERSION"
    mv "$TMP"/llama_cpp_python-"$VERSION"-*.whl "$DIR"/  # only a finished wheel lands in the cache
fi

# The cached wheel plus the server extras' dependencies from PyPI.
WHEEL=$(ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl | head -n 1)
"$PY" -m pip install --quiet "llama-cpp-python[server] @ file://$WHEEL"
"$PY" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__)"
