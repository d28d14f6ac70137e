// Device page, attributes and commands (docs/dashboards.md, "Attributes and commands"). The server rendered both
// tables (they read without JavaScript); this script shows their times in local time, lets operators set and
// delete shared and server attributes and send commands through the operator API (/api/v1/devices/<KEY>/
// attributes and /rpc, with the session's CSRF token in X-CSRFToken), and keeps the commands table live by asking
// the API again every `poll` ms while the page is visible, until the session ends (live.js fetchInSession: a 401, a
// 403 or a login redirect says so once and stops the polling). Values come from devices and people: they only ever
// reach the page through textContent.
(function () {
  "use strict";
  const {fetchInSession, onSessionEnd} = window.HubLive; // live.js
  const config = JSON.parse(document.getElementById("control-page").textContent);
  const attributeForm = document.getElementById("attribute-form"); // operators only
  const attributeError = document.getElementById("attribute-error");
  const commandForm = document.getElementById("command-form"); // operators only
  const outcome = document.getElementById("command-outcome");
  const commandNote = document.getElementById("commands-note");
  const commandBody = document.querySelector("#command-list tbody");
  const commandRows = new Map(); // id -> {text: what the row shows, as JSON; tr}

  function element(tag, text, className) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  function localTime(ms) {
    return new Date(ms).toLocaleString(undefined, {timeZoneName: "short"});
  }

  function timeCell(ms) {
    const td = element("td");
    const time = element("time", localTime(ms));
    time.dateTime = new Date(ms).toISOString();
    time.dataset.ms = String(ms);
    td.append(time);
    return td;
  }

  // A JSON value as the server renders it (json_shown in dashboards/views.py): shortened when long, the whole
  // indented in a <details> (reachable by keyboard, unlike a title).
  function jsonCell(value) {
    const td = element("td");
    const text = JSON.stringify(value);
    if (text.length <= config.short) {
      td.append(element("code", text));
      return td;
    }
    const details = element("details");
    const summary = element("summary");
    summary.append(element("code", `${text.slice(0, config.short - 1)}…`));
    details.append(summary, element("pre", JSON.stringify(value, null, 2)));
    td.append(details);
    return td;
  }

  function emptyRow(columns, text) {
    const tr = element("tr", undefined, "empty");
    const td = element("td", text);
    td.colSpan = columns;
    tr.append(td);
    return tr;
  }

  // ---- the operator API: JSON in and out; a refusal throws its message ({"error": {"code", "message", "field"}})

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function api(url, {method = "GET", body, accept = []} = {}) {
    const headers = {Accept: "application/json"};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    const response = await fetchInSession(url, {method, headers,
                                                body: body === undefined ? undefined : JSON.stringify(body)});
    const answer = await response.json().catch(() => null);
    if (response.ok || accept.includes(response.status)) return {status: response.status, body: answer};
    const message = answer && answer.error ? answer.error.message : `the hub answered ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }

  // ---- attributes: three tables, redrawn from the API's answer after each change

  function attributeRow(attribute, deletable) {
    const tr = element("tr");
    tr.dataset.key = attribute.key;
    const key = element("th", attribute.key);
    key.scope = "row";
    tr.append(key, jsonCell(attribute.value), timeCell(attribute.updated_at), element("td", attribute.updated_by));
    if (deletable) {
      const cell = element("td");
      const button = element("button", "Delete", "attribute-delete");
      button.type = "button";
      button.setAttribute("aria-label", `Delete ${attribute.scope} attribute ${attribute.key}`);
      cell.append(button);
      tr.append(cell);
    }
    return tr;
  }

  function showAttributes(listed) {
    for (const table of document.querySelectorAll("table.attributes")) {
      const scope = table.dataset.scope;
      const deletable = table.hasAttribute("data-deletable");
      const rows = (listed[scope] || []).map((a) => attributeRow({...a, scope}, deletable));
      if (!rows.length) rows.push(emptyRow(deletable ? 5 : 4, `No ${scope} attributes.`));
      table.tBodies[0].replaceChildren(...rows);
    }
  }

  function showAttributeError(message) {
    attributeError.textContent = message;
    attributeError.hidden = !message;
  }

  async function changeAttributes(scope, request, query = "") {
    const answer = await api(`${config.attributes}/${scope}${query}`, request);
    showAttributes(answer.body);
    showAttributeError("");
  }

  function refreshAttributes() {
    api(config.attributes).then((answer) => showAttributes(answer.body)).catch(() => {}); // best effort
  }

  // What the operator typed: JSON when it is JSON (5, true, "x", {"a": 1}), else the text itself (1.2.0, eco).
  function typedValue(text) {
    try {
      return JSON.parse(text);
    } catch (error) {
      return text;
    }
  }

  if (attributeForm) {
    attributeForm.hidden = false; // it needs this script: without it the page shows the tables only
    attributeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = attributeForm.elements;
      const submit = attributeForm.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        await changeAttributes(fields.scope.value, {method: "POST",
                                                    body: {[fields.key.value.trim()]: typedValue(fields.value.value)}});
        fields.key.value = "";
        fields.value.value = "";
        fields.key.focus();
      } catch (error) {
        showAttributeError(error.message);
      } finally {
        submit.disabled = false;
      }
    });
    document.getElementById("attributes").addEventListener("click", async (event) => {
      const button = event.target.closest("button.attribute-delete");
      if (!button) return;
      const table = button.closest("table");
      const key = button.closest("tr").dataset.key;
      const index = Array.from(table.querySelectorAll("button.attribute-delete")).indexOf(button);
      button.disabled = true;
      try {
        await changeAttributes(table.dataset.scope, {method: "DELETE"}, `?${new URLSearchParams({keys: key})}`);
      } catch (error) {
        showAttributeError(error.message);
        button.disabled = false;
        return;
      }
      // The row is gone with its focused button: keep the keyboard in the table (the next row's button), or
      // send it back to the form.
      const left = table.querySelectorAll("button.attribute-delete");
      (left[Math.min(index, left.length - 1)] || attributeForm.elements.key).focus();
    });
  }

  // ---- commands: the form, its outcome, and the table kept live

  function stateText(state) {
    return state.replace("_", " ");
  }

  function commandRow(command) {
    const tr = element("tr");
    tr.dataset.id = String(command.id);
    tr.append(element("td", `#${command.id}`), element("td", command.method),
              element("td", stateText(command.state), `state-${command.state}`), timeCell(command.created_at),
              command.response === null ? element("td") : jsonCell(command.response));
    return tr;
  }

  // Rows whose command did not change are kept as they are (an opened response stays open while polling).
  function showCommands(commands) {
    const rows = [];
    const seen = new Map();
    for (const command of commands) {
      const text = JSON.stringify([command.method, command.state, command.created_at, command.response]);
      const known = commandRows.get(command.id);
      const tr = known && known.text === text ? known.tr : commandRow(command);
      seen.set(command.id, {text, tr});
      rows.push(tr);
    }
    commandRows.clear();
    for (const [id, row] of seen) commandRows.set(id, row);
    if (!rows.length) rows.push(emptyRow(5, "No commands sent to this device yet."));
    const current = Array.from(commandBody.rows);
    if (rows.length !== current.length || rows.some((tr, i) => tr !== current[i])) commandBody.replaceChildren(...rows);
  }

  let polling = null;
  let again = false; // asked while a request was out: ask once more when it ends (it may predate a new command)
  let stopped = false; // the session ended: polling would only fail again
  function refreshCommands() {
    if (polling) {
      again = true;
      return polling;
    }
    polling = api(`${config.rpc}?page_size=${config.rows}`)
      .then((answer) => {
        showCommands(answer.body.results);
        commandNote.textContent = "";
      })
      .catch((error) => {
        commandNote.textContent = `not refreshed: ${error.message}`;
      })
      .finally(() => {
        polling = null;
        if (again) {
          again = false;
          refreshCommands();
        }
      });
    return polling;
  }

  let timer = 0;
  function schedule() {
    clearTimeout(timer);
    if (stopped || document.visibilityState !== "visible") return; // a hidden page asks nothing
    timer = setTimeout(() => refreshCommands().then(schedule), config.poll);
  }

  document.addEventListener("visibilitychange", () => {
    if (stopped || document.visibilityState !== "visible") {
      clearTimeout(timer);
      return;
    }
    refreshCommands().then(schedule); // back in view: what changed meanwhile, at once
    refreshAttributes();
  });

  function say(text, failed) {
    outcome.textContent = text;
    outcome.hidden = false;
    outcome.classList.toggle("form-error", Boolean(failed));
  }

  function outcomeText(status, command) {
    const name = `#${command.id} ${command.method}`;
    if (status === 202) return `${name}: queued; it waits for the device until ${localTime(command.expires_at)}`;
    if (status === 504) return `${name}: ${stateText(command.state)} (${command.error.message})`;
    if (command.state === "delivered") return `${name}: delivered`;
    const response = command.response === null ? "" : ` — response ${JSON.stringify(command.response)}`;
    return `${name}: ${command.state}${response}`;
  }

  if (commandForm) {
    commandForm.hidden = false;
    commandForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = commandForm.elements;
      const ask = {method: fields.method.value.trim(), two_way: fields.two_way.checked,
                   persistent: fields.persistent.checked, timeout: Number(fields.timeout.value)};
      const params = fields.params.value.trim();
      if (params) {
        try {
          ask.params = JSON.parse(params);
        } catch (error) {
          say(`params: not JSON (${error.message})`, true);
          fields.params.focus();
          return;
        }
      }
      const submit = commandForm.querySelector("button[type=submit]");
      submit.disabled = true;
      say(ask.persistent ? `queueing ${ask.method}…`
                         : `sending ${ask.method}; waiting up to ${ask.timeout / 1000} s for the device…`);
      const early = setTimeout(refreshCommands, 300); // while a two-way command waits: list it as it goes
      try {
        const answer = await api(config.rpc, {method: "POST", body: ask, accept: [504]});
        say(outcomeText(answer.status, answer.body), answer.status === 504 || answer.body.state === "failed");
      } catch (error) {
        say(error.message, true);
      } finally {
        clearTimeout(early);
        submit.disabled = false;
        refreshCommands();
      }
    });
  }

  // Server-rendered times, in UTC until now: local time, with the zone named.
  for (const time of document.querySelectorAll("#attributes time[data-ms], #commands time[data-ms]")) {
    time.textContent = localTime(Number(time.dataset.ms));
  }
  onSessionEnd(() => {
    stopped = true;
    clearTimeout(timer);
  });
  schedule();
})();
