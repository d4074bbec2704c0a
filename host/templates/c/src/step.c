// {{name}}: a wasaga saga step in C.
//
// `execute` does the work and returns a JSON object (as text) that the host
// merges into the saga's context; `compensate` undoes it when a later step
// fails for good or the saga is cancelled. The host may call either more
// than once (a retry, or a crash-resume), so both must be safe to repeat:
// `wasaga plugin test {{name}}.wasm` checks that they are.
//
// The bindings (gen/plugin.h) come from `wit-bindgen c` over wit/step.wit.
// Strings passed in are the callee's to free; strings returned are freed by
// the bindings after the host has copied them. JSON inputs and context
// arrive as text: for more than this skeleton does, add a JSON library
// (cJSON is two files) to src/.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

// A growable byte buffer for building JSON text.
typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} buffer_t;

static void buffer_put(buffer_t *b, const void *bytes, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2;
    b->ptr = realloc(b->ptr, b->cap);
    if (b->ptr == NULL) abort();  // out of memory: the call traps
  }
  memcpy(b->ptr + b->len, bytes, n);
  b->len += n;
}

static void buffer_str(buffer_t *b, const char *s) { buffer_put(b, s, strlen(s)); }

// Appends `bytes` as a JSON string, quoted and escaped.
static void buffer_json_string(buffer_t *b, const uint8_t *bytes, size_t n) {
  buffer_str(b, "\"");
  for (size_t i = 0; i < n; i++) {
    uint8_t c = bytes[i];
    if (c == '"' || c == '\\') {
      char escaped[2] = {'\\', (char)c};
      buffer_put(b, escaped, 2);
    } else if (c < 0x20) {
      char escaped[8];
      snprintf(escaped, sizeof escaped, "\\u%04x", c);
      buffer_str(b, escaped);
    } else {
      buffer_put(b, &c, 1);
    }
  }
  buffer_str(b, "\"");
}

static void log_line(wasaga_step_host_log_level_t level, const uint8_t *bytes, size_t n) {
  plugin_string_t message = {(uint8_t *)bytes, n};
  wasaga_step_host_log(level, &message);
}

// The id of what this step creates: the saga's id and the step's index,
// the same in execute and compensate and across retries and crash-resumes,
// so a repeated call finds what an earlier one created. Pass
// state->idempotency_key to your provider's API for the same reason.
static buffer_t resource_id(const exports_wasaga_step_step_saga_state_t *state) {
  buffer_t id = {0};
  char index[16];
  buffer_str(&id, "{{name}}-");
  buffer_put(&id, state->saga_id.ptr, state->saga_id.len);
  snprintf(index, sizeof index, "-%u", state->step_index);
  buffer_str(&id, index);
  return id;
}

void exports_wasaga_step_step_name(plugin_string_t *ret) {
  plugin_string_dup(ret, "{{name}}");
}

bool exports_wasaga_step_step_execute(exports_wasaga_step_step_saga_state_t *state,
                                      plugin_string_t *ret,
                                      exports_wasaga_step_step_step_error_t *err) {
  (void)err;  // on failure: set err->tag (and err->val) and return false
  buffer_t id = resource_id(state);

  // Call your provider's API here. This skeleton records the resource it
  // would have created, with the saga's inputs as its spec.
  buffer_t line = {0};
  buffer_str(&line, "{{name}}: created ");
  buffer_put(&line, id.ptr, id.len);
  log_line(WASAGA_STEP_HOST_LOG_LEVEL_INFO, line.ptr, line.len);
  plugin_string_t kind = {(uint8_t *)"{{name}}", strlen("{{name}}")};
  plugin_string_t external_id = {id.ptr, id.len};
  wasaga_step_host_record_resource(&kind, &external_id, &state->inputs);

  // The output: {"{{ident}}_id": "<id>"}; only what later steps need.
  buffer_t out = {0};
  buffer_str(&out, "{\"{{ident}}_id\":");
  buffer_json_string(&out, id.ptr, id.len);
  buffer_str(&out, "}");
  ret->ptr = out.ptr;
  ret->len = out.len;

  free(line.ptr);
  free(id.ptr);
  exports_wasaga_step_step_saga_state_free(state);
  return true;
}

bool exports_wasaga_step_step_compensate(exports_wasaga_step_step_saga_state_t *state,
                                         exports_wasaga_step_step_step_error_t *err) {
  (void)err;
  // Undo what execute did. Compensate may run without a finished execute
  // before it (the saga was cancelled while it ran) and may run twice:
  // deleting something already gone is success.
  buffer_t id = resource_id(state);
  buffer_t line = {0};
  buffer_str(&line, "{{name}}: deleted ");
  buffer_put(&line, id.ptr, id.len);
  buffer_str(&line, " (if it existed)");
  log_line(WASAGA_STEP_HOST_LOG_LEVEL_INFO, line.ptr, line.len);
  free(line.ptr);
  free(id.ptr);
  exports_wasaga_step_step_saga_state_free(state);
  return true;
}
