#!/bin/sh
# Builds {{name}}.wasm from src/*.c: bindings with `wit-bindgen c`, a WASI
# preview 1 module with clang and wasi-libc, then a component with
# `wasm-tools component new` and the WASI preview 1 adapter
# (wasi_snapshot_preview1.reactor.wasm, written by `wasaga plugin new`).
# README.md says what it needs. CC and WASI_SYSROOT may be set (for
# wasi-sdk: CC=$WASI_SDK/bin/clang WASI_SYSROOT=$WASI_SDK/share/wasi-sysroot).
set -eu
cd "$(dirname "$0")"
cc=${CC:-clang}
sysroot=${WASI_SYSROOT:-/usr}
mkdir -p gen build
# wit-bindgen names each file it writes; keep its output for when it fails.
if ! log=$(wit-bindgen c wit --world plugin --out-dir gen 2>&1); then
  echo "$log" >&2
  exit 1
fi
"$cc" --target=wasm32-wasi --sysroot="$sysroot" -mexec-model=reactor -Os \
  -Wall -Wextra -Igen -Wl,--strip-debug \
  -o build/{{name}}.core.wasm src/*.c gen/plugin.c gen/plugin_component_type.o
wasm-tools component new build/{{name}}.core.wasm \
  --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
