// wasaga console: live updates and actions, in plain JavaScript. Pages are
// rendered by the server and read fine without this file; it only keeps
// them live (server-sent events, then the changed part fetched again) and
// sends the actions, with the page's CSRF token.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";

  function flash(text, good) {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = "show " + (good ? "good" : "bad");
  }

  // Fetches `url` and swaps it into #target, at most every 150 ms.
  function refresher(url, target) {
    let timer = null;
    return function () {
      if (timer) return;
      timer = setTimeout(async function () {
        timer = null;
        const r = await fetch(url(), { credentials: "same-origin" });
        if (r.ok) {
          document.getElementById(target).innerHTML = await r.text();
          document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
        }
      }, 150);
    };
  }

  function listen(url, names, onEvent) {
    const source = new EventSource(url, { withCredentials: true });
    for (const name of names) source.addEventListener(name, onEvent);
    source.addEventListener("error", function () {
      // The browser reconnects by itself; a dropped stream starts with a
      // fresh snapshot, and the page is fetched again then.
    });
    return source;
  }

  const list = document.getElementById("saga-rows");
  if (list) {
    const refresh = refresher(function () { return "/ui/fragment/sagas" + location.search; }, "saga-rows");
    listen("/v1/events", ["saga"], refresh);
  }

  const saga = document.getElementById("saga-live");
  if (saga) {
    const id = saga.dataset.id;
    const refresh = refresher(function () { return "/ui/sagas/" + id + "/fragment"; }, "saga-live");
    // The first snapshot is what the page already shows; a later one
    // (after a reconnect) may not be.
    let snapshots = 0;
    listen("/v1/sagas/" + id + "/events", ["snapshot", "step", "saga"], function (e) {
      if (e.type === "snapshot" && snapshots++ === 0) return;
      refresh();
    });
  }

  document.addEventListener("click", async function (e) {
    const button = e.target.closest("button[data-post]");
    if (!button) return;
    e.preventDefault();
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
    const r = await fetch(button.dataset.post, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: "{}",
    });
    const body = await r.json().catch(function () { return {}; });
    if (r.ok) flash(button.textContent.trim() + ": done (" + (body.status || "ok") + ")", true);
    else flash((body.error && body.error.message) || ("refused: " + r.status), false);
  });

  // A wait's answer: the form's fields become the payload (by their
  // data-type), posted to the wait's complete or reject route.
  document.addEventListener("click", async function (e) {
    const button = e.target.closest("button[data-answer]");
    if (!button) return;
    e.preventDefault();
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
    const form = button.closest("form.wait-answer");
    const body = {};
    const note = form.querySelector("input[name=note]").value;
    if (note) body.note = note;
    if (button.dataset.answer === "complete") {
      const payload = {};
      try {
        for (const field of form.querySelectorAll("[data-type]")) {
          const type = field.dataset.type;
          if (field.name === "payload" && type === "json") { Object.assign(payload, JSON.parse(field.value || "{}")); continue; }
          if (type === "boolean") payload[field.name] = field.checked;
          else if (field.value === "") continue;
          else if (type === "number") payload[field.name] = Number(field.value);
          else if (type === "json") payload[field.name] = JSON.parse(field.value);
          else payload[field.name] = field.value;
        }
      } catch (err) {
        flash("the payload is not JSON: " + err.message, false);
        return;
      }
      body.payload = payload;
    }
    const r = await fetch(form.dataset[button.dataset.answer], {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(function () { return {}; });
    if (r.ok) flash(button.textContent.trim() + " " + form.dataset.wait + ": done (" + (answer.status || "ok") + ")", true);
    else flash((answer.error && answer.error.message) || ("refused: " + r.status), false);
  });

  const drop = document.getElementById("drop");
  if (drop) {
    const input = document.getElementById("upload-file");
    async function upload(file) {
      flash("uploading " + file.name + " ...", true);
      const r = await fetch("/v1/plugins", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/wasm" },
        body: file,
      });
      const body = await r.json().catch(function () { return {}; });
      if (r.ok) {
        flash("uploaded " + body.name + " (" + body.digest + ")", true);
        const rows = await fetch("/ui/fragment/plugins", { credentials: "same-origin" });
        if (rows.ok) document.getElementById("plugin-rows").innerHTML = await rows.text();
      } else {
        flash((body.error && body.error.message) || ("refused: " + r.status), false);
      }
    }
    input.addEventListener("change", function () { if (input.files[0]) upload(input.files[0]); });
    drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
    drop.addEventListener("drop", function (e) {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
    });
  }
})();
