#!/bin/bash
# Time from `wasaga plugin new` to a passing `wasaga plugin test`, per
# language: first build (empty caches for the project: a fresh target dir,
# a fresh venv, a fresh npm cache) and second build (after an edit), and
# the component's size. The numbers in the issue note came from this.
#
#   W=path/to/wasaga bench/plugin-new-to-test.sh
#
# Needs what each project's README says (wit-bindgen and wasm-tools on
# PATH: `cargo xtask polyglot` installs them into target/polyglot/tools).
set -u
W=${W:-wasaga}
P=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/polyglot
export PATH=$P/tools/bin:$PATH
root=$(mktemp -d /var/tmp/kit-measure.XXXX)
cd "$root"
measure() {
  lang=$1; shift
  name=m-$lang
  s=$(date +%s.%N)
  $W plugin new $name --lang $lang >/dev/null
  cd $name
  "$@" >"$root/build-$lang.log" 2>&1 || { echo "build failed"; tail -20 "$root/build-$lang.log"; }
  $W plugin test $name.wasm --inputs '{"message":"hi"}' >"$root/test-$lang.log" 2>&1 || echo "plugin test failed"
  first=$(echo "$(date +%s.%N) - $s" | bc)
  # Second: an edit to the step, then build and test again.
  case $lang in rust) touch src/lib.rs;; python) touch app.py;; js) touch step.js;; c) touch src/step.c;; esac
  s=$(date +%s.%N)
  "$@" >>"$root/build-$lang.log" 2>&1
  $W plugin test $name.wasm --inputs '{"message":"hi"}' >>"$root/test-$lang.log" 2>&1 || echo "plugin test failed"
  second=$(echo "$(date +%s.%N) - $s" | bc)
  printf '%-7s first %6.1f s  second %6.1f s  %10d bytes\n' $lang $first $second $(stat -c %s $name.wasm)
  cd "$root"
}
measure rust env -u RUSTFLAGS CARGO_TARGET_DIR="$root/rust-target" sh -c './build.sh'
measure python sh -c 'if [ ! -d .venv ]; then python3 -m venv .venv && .venv/bin/pip install -q --no-cache-dir componentize-py==0.25.1; fi && ./build.sh'
measure js sh -c 'npm install --no-audit --no-fund --cache "$PWD/.npm-cache" --loglevel=error && npm run build'
measure c ./build.sh
