// js-http-resource: the http-resource step in JavaScript, with fetch.
//
// execute creates a resource through a provider's API (inputs.api), with a
// token the step never sees: the header says `{{secret:NAME}}` and the host
// puts the granted secret there. The saga's idempotency key makes a repeated
// call create nothing twice. compensate deletes it. The exported functions
// are async: componentize-js then runs the event loop (and so fetch) to
// completion on each call.
import { log, recordResource } from 'wasaga:step/host@0.1.0';

function fatal(message) {
  return { tag: 'fatal', val: message };
}

function refused(what, status, body) {
  const message = `${what}: the API answered ${status}: ${body}`;
  return status === 429 || status >= 500 ? { tag: 'retryable', val: message } : fatal(message);
}

function auth(inputs) {
  return `Bearer {{secret:${inputs.secret ?? 'cloud-token'}}}`;
}

async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (e) {
    // A refusal by the host (not granted) or no connection: the log says which.
    throw { tag: 'retryable', val: `the request to ${url} failed: ${e}` };
  }
}

export const step = {
  name() {
    return 'js-http-resource';
  },

  async execute(state) {
    const inputs = JSON.parse(state.inputs || '{}');
    if (!inputs.api || !inputs.name) {
      throw fatal('inputs.api and inputs.name are needed');
    }
    const response = await send(`${inputs.api}/v2/resources`, {
      method: 'POST',
      headers: {
        authorization: auth(inputs),
        'idempotency-key': state.idempotencyKey,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ name: inputs.name }),
    });
    const text = await response.text();
    if (!response.ok) {
      throw refused('creating the resource', response.status, text);
    }
    const created = JSON.parse(text);
    recordResource('cloud-resource', created.id, JSON.stringify({ name: inputs.name }));
    log('info', `created ${created.id} (${inputs.name})`);
    return JSON.stringify({ js_resource_id: created.id });
  },

  async compensate(state) {
    const inputs = JSON.parse(state.inputs || '{}');
    const context = JSON.parse(state.context || '{}');
    const id = context.js_resource_id;
    if (!id) {
      log('info', 'nothing was created; nothing to delete');
      return;
    }
    const response = await send(`${inputs.api}/v2/resources/${id}`, {
      method: 'DELETE',
      headers: { authorization: auth(inputs) },
    });
    if (response.status === 404) {
      log('info', `${id} was already gone`);
    } else if (!response.ok) {
      throw refused('deleting the resource', response.status, await response.text());
    } else {
      log('info', `deleted ${id}`);
    }
  },
};
