#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py (README.md says how
# to install it). Uses .venv/bin/componentize-py when there is one.
set -eu
cd "$(dirname "$0")"
componentize=${COMPONENTIZE_PY:-componentize-py}
if [ -z "${COMPONENTIZE_PY:-}" ] && [ -x .venv/bin/componentize-py ]; then
  componentize=.venv/bin/componentize-py
fi
"$componentize" -d wit -w observing-plugin componentize app -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
