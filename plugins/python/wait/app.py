"""py-wait: a step on contract 0.2.0 that waits, written in Python.

It completes once the wall clock reaches `inputs.not_before_ms` (milliseconds
since the Unix epoch). Before that it answers `poll-after`: "not done yet,
call me again in N ms" (at most `inputs.poll_ms`, default 1000). The wait is
durable and holds nothing on the host; it uses no attempt. A real step would
ask a provider's API whether its resource is ready instead of the clock.

Build it (from the repository root):

    python3 -m venv .venv-py && .venv-py/bin/pip install componentize-py==0.25.1
    cd plugins/python/wait
    ../../../.venv-py/bin/componentize-py -d ../../../wit/0.2.0 -w plugin componentize app -o py-wait.wasm

or simply `cargo xtask polyglot`, which writes target/polyglot/python-wait.wasm.
"""

import json
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import SagaState, StepError_PollAfter


class Step(exports.Step):
    def name(self) -> str:
        return "py-wait"

    def execute(self, state: SagaState) -> str:
        inputs = json.loads(state.inputs or "{}")
        now = int(time.time() * 1000)
        not_before = int(inputs.get("not_before_ms", 0))
        if now < not_before:
            left = not_before - now
            host.log(host.LogLevel.INFO, f"py-wait: {left} ms to go")
            raise Err(StepError_PollAfter(min(left, int(inputs.get("poll_ms", 1000)))))
        return json.dumps({"py_waited_until": now})

    def compensate(self, state: SagaState) -> None:
        host.log(host.LogLevel.INFO, "py-wait has nothing to undo")
