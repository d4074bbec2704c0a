// {{name}}: a wasaga saga step in JavaScript.
//
// `execute` does the work and returns a JSON object (as text) that the host
// merges into the saga's context; `compensate` undoes it when a later step
// fails for good or the saga is cancelled. The host may call either more
// than once (a retry, or a crash-resume), so both must be safe to repeat:
// `wasaga plugin test {{name}}.wasm` checks that they are.
//
// Errors: throw `{ tag: 'retryable', val: '...' }` for a transient failure
// (retried with backoff), `{ tag: 'fatal', val: '...' }` for a permanent one
// (the saga compensates), `{ tag: 'poll-after', val: ms }` for "not done
// yet, call me again in ms" (a durable wait that uses no attempt). To call
// an HTTP API, make the function `async` and `await fetch(...)`: the host
// must grant this plugin the origin (`wasaga plugin grant {{name}} --http ...`).
import { log, recordResource } from 'wasaga:step/host@{{contract}}';

export const step = {
  name() {
    return '{{name}}';
  },

  execute(state) {
    // The inputs are the saga's, the same for every step.
    const inputs = JSON.parse(state.inputs || '{}');
    // Call your provider's API here, passing state.idempotencyKey, which
    // stays the same across retries and crash-resumes, so that a repeated
    // call creates nothing twice. This skeleton names its resource after
    // that key, which is just as repeatable.
    const id = `{{name}}-${state.idempotencyKey}`;
    log('info', `{{name}}: created ${id}`);
    recordResource('{{name}}', id, JSON.stringify({ message: inputs.message ?? null }));
    // Return only what later steps (and this one's compensate) need.
    return JSON.stringify({ '{{ident}}_id': id });
  },

  compensate(state) {
    // Undo what execute did, found through the context. Compensate may run
    // without a finished execute before it (the saga was cancelled while it
    // ran) and may run twice: "already gone" is success.
    const id = JSON.parse(state.context || '{}')['{{ident}}_id'];
    log('info', id === undefined ? '{{name}}: nothing to undo' : `{{name}}: deleted ${id}`);
  },
};

// Looks, changing nothing, at whether `execute` with this idempotency key
// took effect: the host asks after a crash mid-call and before undoing a
// call that did not finish. Ask your provider for what it made under
// state.idempotencyKey and answer `{ tag: 'applied', val: JSON.stringify(output) }`
// (recording what you see with recordResource) or `{ tag: 'not-applied' }`.
// This skeleton makes nothing it could look at, so it cannot tell.
export const observe = {
  observe(state) {
    return { tag: 'unknown' };
  },
};
