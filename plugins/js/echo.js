// js-echo: the echo step, written in JavaScript with componentize-js.
//
// It puts `js_echoed_at_step_<index>` = `inputs.message` into the context,
// logs through the host and through console.log (captured into the step's
// log), and fails for good when `inputs.js_fail` is set: a thrown
// `{ tag: 'fatal', val: message }` (or `retryable`) is the WIT `step-error`.
import { log, recordResource } from 'wasaga:step/host@0.1.0';

export const step = {
  name() {
    return 'js-echo';
  },

  execute(state) {
    const inputs = state.inputs ? JSON.parse(state.inputs) : {};
    if (inputs.js_fail) {
      throw { tag: 'fatal', val: `js-echo was asked to fail: ${inputs.js_fail}` };
    }
    console.log(`js-echo running step ${state.stepIndex}, attempt ${state.attempt}`);
    log('info', `echoing for saga ${state.sagaId}`);
    if (inputs.js_resource) {
      recordResource('note', `${state.sagaId}-${state.stepIndex}`, JSON.stringify({ text: inputs.js_resource }));
    }
    return JSON.stringify({ [`js_echoed_at_step_${state.stepIndex}`]: inputs.message ?? null });
  },

  compensate(state) {
    log('info', `js-echo has nothing to undo at step ${state.stepIndex}`);
  },
};
