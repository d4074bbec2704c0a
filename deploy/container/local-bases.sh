#!/usr/bin/env bash
# Builds the Containerfile's two base images from Debian's packages, for a
# machine that reaches Debian's mirror but no container registry:
#   localhost/wasaga-runtime-base  debootstrap minbase + CA certificates, tzdata
#   localhost/wasaga-builder       the same + gcc, libc6-dev and this
#                                  machine's Rust toolchain (rustup's default)
#                                  and the CA certificates it trusts
# Then prints the build command. Needs root, debootstrap and podman.
set -euo pipefail
work=${WORK:-/var/tmp/wasaga-bases}
mirror=${MIRROR:-http://deb.debian.org/debian}
toolchain=${TOOLCHAIN:-$(rustup toolchain list | awk '/default/{print $1}')}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
mkdir -p "$work"

if ! podman image exists localhost/wasaga-runtime-base; then
  rm -rf "$work/runtime"
  debootstrap --variant=minbase --include=ca-certificates,tzdata bookworm "$work/runtime" "$mirror"
  rm -rf "$work/runtime/var/cache/apt/archives/"*.deb "$work/runtime/var/lib/apt/lists/"*
  tar -C "$work/runtime" -c . | podman import - localhost/wasaga-runtime-base
fi

if ! podman image exists localhost/wasaga-builder; then
  if [ ! -x "$work/builder/usr/bin/gcc" ]; then
    rm -rf "$work/builder"
    debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,pkg-config bookworm \
      "$work/builder" "$mirror"
  fi
  # The CAs this machine trusts (an egress proxy's, say), for cargo's
  # downloads in the build stage; the runtime keeps Debian's own.
  cp /etc/ssl/certs/ca-certificates.crt "$work/builder/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$work/builder/usr/local/rustup/toolchains/$toolchain"
  mkdir -p "$work/builder/usr/local/rustup/toolchains" "$work/builder/usr/local/cargo/bin"
  cp -a "$rustup_home/toolchains/$toolchain" "$work/builder/usr/local/rustup/toolchains/"
  for tool in cargo rustc rustdoc; do
    ln -sf "../../rustup/toolchains/$toolchain/bin/$tool" "$work/builder/usr/local/cargo/bin/$tool"
  done
  tar -C "$work/builder" -c . | podman import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    - localhost/wasaga-builder
fi

echo "podman build --build-arg BUILDER=localhost/wasaga-builder" \
  "--build-arg RUNTIME=localhost/wasaga-runtime-base -t wasaga ."
