"""py-echo: the echo step, written in Python with componentize-py.

It puts `py_echoed_at_step_<index>` = `inputs.message` into the context,
logs through the host and through print() (the host captures stdout into the
step's log), and fails for good when `inputs.py_fail` is set, to show how a
Python step reports errors.

Build it (from the repository root):

    python3 -m venv .venv-py && .venv-py/bin/pip install componentize-py==0.25.1
    cd plugins/python/echo
    ../../../.venv-py/bin/componentize-py -d ../../../wit -w plugin componentize app -o py-echo.wasm

or simply `cargo xtask polyglot`, which writes target/polyglot/python-echo.wasm.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import SagaState, StepError_Fatal


class Step(exports.Step):
    def name(self) -> str:
        return "py-echo"

    def execute(self, state: SagaState) -> str:
        inputs = json.loads(state.inputs or "{}")
        if inputs.get("py_fail"):
            raise Err(StepError_Fatal(f"py-echo was asked to fail: {inputs['py_fail']}"))
        print(f"py-echo running step {state.step_index}, attempt {state.attempt}")
        host.log(host.LogLevel.INFO, f"echoing for saga {state.saga_id}")
        return json.dumps({f"py_echoed_at_step_{state.step_index}": inputs.get("message")})

    def compensate(self, state: SagaState) -> None:
        host.log(host.LogLevel.INFO, f"py-echo has nothing to undo at step {state.step_index}")
