// c-echo: the echo step, written in C (contract 0.2.0).
//
// It puts `c_echoed_at_step_<index>` = the saga's inputs into the context,
// logs through the host and through printf (the host captures stdout into
// the step's log), and has nothing to undo. The inputs arrive as JSON text
// that is already a valid JSON value, so echoing them needs no JSON parser.
//
// Build it as an author would (the test suite does exactly this, in
// host/tests/it/authoring.rs):
//
//     wasaga plugin new c-echo --lang c --dir /tmp/c-echo
//     cp plugins/c/echo/echo.c /tmp/c-echo/src/step.c
//     /tmp/c-echo/build.sh        # clang + wasi-libc, wit-bindgen c,
//                                 # wasm-tools component new --adapt

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

static void log_info(const char *text) {
  plugin_string_t message;
  plugin_string_set(&message, text);
  wasaga_step_host_log(WASAGA_STEP_HOST_LOG_LEVEL_INFO, &message);
}

void exports_wasaga_step_step_name(plugin_string_t *ret) { plugin_string_dup(ret, "c-echo"); }

bool exports_wasaga_step_step_execute(exports_wasaga_step_step_saga_state_t *state,
                                      plugin_string_t *ret,
                                      exports_wasaga_step_step_step_error_t *err) {
  (void)err;
  printf("c-echo running step %u, attempt %u\n", state->step_index, state->attempt);
  fflush(stdout);
  char line[160];
  snprintf(line, sizeof line, "echoing for saga %.*s", (int)state->saga_id.len,
           (const char *)state->saga_id.ptr);
  log_info(line);

  // {"c_echoed_at_step_<index>":<inputs>}
  char head[48];
  int head_len = snprintf(head, sizeof head, "{\"c_echoed_at_step_%u\":", state->step_index);
  size_t len = (size_t)head_len + state->inputs.len + 1;
  uint8_t *out = malloc(len);
  if (out == NULL) abort();
  memcpy(out, head, (size_t)head_len);
  memcpy(out + head_len, state->inputs.ptr, state->inputs.len);
  out[len - 1] = '}';
  ret->ptr = out;
  ret->len = len;
  exports_wasaga_step_step_saga_state_free(state);
  return true;
}

bool exports_wasaga_step_step_compensate(exports_wasaga_step_step_saga_state_t *state,
                                         exports_wasaga_step_step_step_error_t *err) {
  (void)err;
  log_info("c-echo has nothing to undo");
  exports_wasaga_step_step_saga_state_free(state);
  return true;
}
