"""{{name}}: a wasaga saga step in Python.

`execute` does the work and returns a JSON object (as text) that the host
merges into the saga's context; `compensate` undoes it when a later step
fails for good or the saga is cancelled. The host may call either more than
once (a retry, or a crash-resume), so both must be safe to repeat:
`wasaga plugin test {{name}}.wasm` checks that they are.

Errors: raise `Err(StepError_Retryable("..."))` for a transient failure
(retried with backoff), `Err(StepError_Fatal("..."))` for a permanent one
(the saga compensates), `Err(StepError_PollAfter(ms))` for "not done yet,
call me again in ms" (a durable wait that uses no attempt).

`observe` looks, changing nothing, at whether `execute` with this
idempotency key took effect; the host asks it after a crash mid-call and
before undoing a call that did not finish.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Observation,
    Observation_Unknown,
    SagaState,
    StepError_Fatal,
)


class Step(exports.Step):
    def name(self) -> str:
        return "{{name}}"

    def execute(self, state: SagaState) -> str:
        # The inputs are the saga's, the same for every step.
        inputs = json.loads(state.inputs or "{}")
        if not isinstance(inputs, dict):
            raise Err(StepError_Fatal("inputs must be a JSON object"))
        # Call your provider's API here, passing state.idempotency_key, which
        # stays the same across retries and crash-resumes, so that a repeated
        # call creates nothing twice. This skeleton names its resource after
        # that key, which is just as repeatable.
        resource_id = f"{{name}}-{state.idempotency_key}"
        host.log(host.LogLevel.INFO, f"{{name}}: created {resource_id}")
        host.record_resource(
            "{{name}}", resource_id, json.dumps({"message": inputs.get("message")})
        )
        # Return only what later steps (and this one's compensate) need.
        return json.dumps({"{{ident}}_id": resource_id})

    def compensate(self, state: SagaState) -> None:
        # Undo what execute did, found through the context. Compensate may
        # run without a finished execute before it (the saga was cancelled
        # while it ran) and may run twice: "already gone" is success.
        context = json.loads(state.context or "{}")
        resource_id = context.get("{{ident}}_id")
        if resource_id is None:
            host.log(host.LogLevel.INFO, "{{name}}: nothing to undo")
        else:
            host.log(host.LogLevel.INFO, f"{{name}}: deleted {resource_id}")


class Observe(exports.Observe):
    def observe(self, state: SagaState) -> Observation:
        # Ask your provider for what it made under state.idempotency_key and
        # answer Observation_Applied(json.dumps(output)) (the output execute
        # would return; record what you see with host.record_resource) or
        # Observation_NotApplied(). This skeleton makes nothing it could
        # look at, so it cannot tell.
        return Observation_Unknown()
