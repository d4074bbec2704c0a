// js-wait: a step on contract 0.2.0 that waits, written in JavaScript.
//
// It completes once the wall clock reaches `inputs.not_before_ms`
// (milliseconds since the Unix epoch). Before that it throws
// `{ tag: 'poll-after', val: ms }`: "not done yet, call me again in ms"
// (at most `inputs.poll_ms`, default 1000). The wait is durable and holds
// nothing on the host; it uses no attempt. A real step would ask a
// provider's API whether its resource is ready instead of the clock.
//
// Build: `node build.mjs ../../wit/0.2.0 wait.js js-wait.wasm`, or
// `cargo xtask polyglot` (target/polyglot/js-wait.wasm).
import { log } from 'wasaga:step/host@0.2.0';

export const step = {
  name() {
    return 'js-wait';
  },

  execute(state) {
    const inputs = state.inputs ? JSON.parse(state.inputs) : {};
    const now = Date.now();
    const notBefore = Number(inputs.not_before_ms ?? 0);
    if (now < notBefore) {
      const left = notBefore - now;
      log('info', `js-wait: ${left} ms to go`);
      throw { tag: 'poll-after', val: Math.min(left, Number(inputs.poll_ms ?? 1000)) };
    }
    return JSON.stringify({ js_waited_until: now });
  },

  compensate(state) {
    log('info', 'js-wait has nothing to undo');
  },
};
