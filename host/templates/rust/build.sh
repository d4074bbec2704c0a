#!/bin/sh
# Builds {{name}}.wasm: the crate for wasm32-unknown-unknown, then a
# component with `wasm-tools component new`. README.md says what it needs.
set -eu
cd "$(dirname "$0")"
target=wasm32-unknown-unknown
target_dir=${CARGO_TARGET_DIR:-target}
if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  cargo build --release --target "$target"
elif [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src/rust ]; then
  # No rustup target here: Debian's rustc-web builds std from its source
  # (rust-web-src), linking with rust-lld when rustup has it, else wasm-ld.
  lld=$(ls "$(rustc --print sysroot 2>/dev/null)"/lib/rustlib/*/bin/rust-lld 2>/dev/null | head -n1 || true)
  PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="${lld:-wasm-ld}" \
    /usr/bin/cargo build --release --target "$target" -Zbuild-std=std,panic_abort
else
  echo "no Rust toolchain for $target: run \`rustup target add $target\`" >&2
  echo "(or on Debian: apt-get install rustc-web cargo-web rust-web-src)" >&2
  exit 1
fi
wasm-tools component new "$target_dir/$target/release/{{ident}}.wasm" -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
