// Live device page (docs/dashboards.md, "Device page"): the chosen window drawn whole at any rate. The window's
// data comes from /api/v1/devices/<KEY>/window (min/max buckets of about a pixel, then the newest raw readings);
// the device's stream (live.js follow) continues it from the newest reading the answer held, and each chart
// (live.js WindowCharts) folds what leaves its raw tail into buckets, so neither memory nor drawing grows with
// the device's rate. Each reading is drawn once: a point whose ts is not newer than its series' newest is
// dropped. Device-provided text only ever goes through textContent.
(function () {
  "use strict";
  const {follow, WindowCharts, windowFetch, showState, fetchInSession, announce, keepFocus, retryNow} = window.HubLive;
  const page = JSON.parse(document.getElementById("device-page").textContent);
  const picked = new Set(page.keys); // empty: every numeric key
  const status = document.getElementById("connection");
  const note = document.getElementById("window-note");
  const csv = document.getElementById("window-csv");
  const texts = new Map(); // key -> {row, ts}
  let newest = 0; // newest numeric ts received (any key): the `since` of the next connection

  const charts = new WindowCharts({
    container: document.getElementById("charts"),
    windowMs: page.window,
    api: () => page.api,
    shapes: thresholdLines,
    name: (device) => device,
    shown: (range) => {
      const keys = Array.from(charts.charts.keys());
      const params = new URLSearchParams({keys: keys.join(","), start: Math.floor(range[0]), end: Math.ceil(range[1]) + 1,
                                          agg: "NONE"});
      csv.href = `${page.csv}?${params}`;
      csv.hidden = keys.length === 0;
    },
  });
  charts.skew = page.now - Date.now();

  function take(readings) {
    for (const [ts, key, value] of readings) {
      if (typeof value === "string") { showText(key, ts, value); continue; }
      if (typeof value !== "number") continue;
      if (ts > newest) newest = ts; // unpicked keys too: the stream had them, no need to catch up on them
      if (picked.size && !picked.has(key)) continue;
      charts.add(key, page.device, ts, value);
    }
    charts.schedule();
  }

  // ---- alerts: threshold lines on the charts, the firing banner, the event list (live from the stream)

  const SEVERITY_COLOURS = {critical: "#dc2626", warning: "#d97706", info: "#0284c7"};
  const firing = new Map(page.firing.map((rule) => [rule.id, rule])); // rule id -> rule

  function thresholdLines(key) {
    return page.thresholds.filter((t) => t.key === key).map((t) => ({
      type: "line", xref: "paper", x0: 0, x1: 1, y0: t.value, y1: t.value,
      line: {color: SEVERITY_COLOURS[t.severity] || "#6b7280", width: 1, dash: "dash"},
    }));
  }

  function showFiring() {
    const banner = document.getElementById("firing");
    const rules = Array.from(firing.values());
    banner.hidden = rules.length === 0;
    const worst = ["critical", "warning", "info"].find((sev) => rules.some((r) => r.severity === sev));
    banner.className = worst ? `sev-${worst}` : "";
    const text = rules.length ? `Firing: ${rules.map((r) => `${r.name} (${r.severity})`).join(", ")}` : "";
    if (banner.textContent !== text) banner.textContent = text; // a live region: announce changes only
  }

  // The time format of every page: local, with the zone named (control.js, times.js).
  const localTime = (ms) => new Date(ms).toLocaleString(undefined, {timeZoneName: "short"});

  function addAlertEvent(event, live) {
    const body = document.querySelector("#alert-events tbody");
    const row = document.createElement("tr");
    row.className = `sev-${event.rule.severity}`;
    const cells = [localTime(event.at), event.type, event.rule.name, event.rule.severity,
                   event.value === null ? "" : String(event.value)];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      row.appendChild(td);
    }
    if (live) body.insertBefore(row, body.firstChild); else body.appendChild(row);
    document.getElementById("no-alerts").hidden = true;
    if (live && event.type === "fired") firing.set(event.rule.id, event.rule);
    if (live && event.type === "resolved") firing.delete(event.rule.id);
    showFiring();
  }

  // ---- text values: server-rendered rows, updated by newer ones (live, or fetched on each connection)

  function showText(key, ts, value) {
    let t = texts.get(key);
    if (t && ts <= t.ts) return;
    if (!t) t = textRow(key);
    t.ts = ts;
    t.row.dataset.ts = String(ts);
    t.row.cells[1].textContent = value;
    t.row.cells[2].textContent = localTime(ts);
    document.getElementById("text-values").hidden = false;
  }

  function textRow(key) {
    const row = document.createElement("tr");
    row.dataset.key = key;
    const th = document.createElement("th");
    th.textContent = key;
    row.append(th, document.createElement("td"), document.createElement("td"));
    const body = document.querySelector("#texts tbody");
    const next = Array.from(body.rows).find((r) => r.dataset.key > key);
    body.insertBefore(row, next || null);
    const t = {row: row, ts: -Infinity};
    texts.set(key, t);
    return t;
  }

  function refreshTexts() {
    fetchInSession(page.latest, {headers: {Accept: "application/json"}})
      .then((response) => (response.ok ? response.json() : {latest: {}}))
      .then((body) => {
        for (const [key, v] of Object.entries(body.latest)) {
          if (typeof v.value === "string") showText(key, v.ts, v.value);
        }
      })
      .catch(() => {}); // best effort: the next connection fetches again (a session ended says so itself)
  }

  // ---- start: the window, then the stream from its newest reading

  async function start() {
    showState(status, "connecting", "connecting…");
    const end = charts.now();
    const begin = end - page.window;
    if (page.charted.length) {
      try {
        const body = await windowFetch(page.api, page.charted, begin, end, charts.pixels());
        charts.load(page.device, body);
        if (body.newest !== null) newest = Math.max(newest, body.newest);
        const decimated = Object.values(body.series).some((s) => s.buckets.length);
        note.textContent = decimated ? `older readings as min/max per ${HubCharts.formatInterval(body.interval)}, ` +
          `the newest ${window.HubLive.TAIL.toLocaleString()} per key as sent` : "every reading as sent";
      } catch (error) {
        note.textContent = `could not load the window (${error.message}): live readings only`;
      }
    }
    follow(page.device, {
      since: () => Math.max(newest, charts.now() - page.window),
      readings: take,
      alert: (event) => addAlertEvent(event, true),
      state: (state, text, login) => {
        showState(status, state, text, login ? page.login : null);
        announce(state, text);
      },
      live: refreshTexts,
    }, page.catchup);
  }

  // ---- the picker: the choice lives in the URL's query, so applying it reloads the page; the control that
  // changed has the keyboard's focus again after the reload (live.js keepFocus). A ticked key applies at once. The
  // window selector applies at once when picked from its list (a click, or Enter in the opened list); arrowing
  // or typing through it while closed changes its value at every key press, so that applies on Enter or when the
  // focus leaves it, not once per key (issue 25, WCAG 3.2.2).

  const form = document.getElementById("picker");
  const windowSelect = form.elements.window;
  const BROWSING = /^(Arrow(Up|Down|Left|Right)|Home|End|Page(Up|Down)|[^ ])$/u; // keys that step a closed <select>
  let browsingKey = false; // the value is changing under a key press that only steps through the options
  const shown = windowSelect.value; // the window the page shows
  let stepped = false; // another window was stepped to and is not applied yet

  function apply(control) {
    keepFocus(control);
    form.requestSubmit();
  }

  windowSelect.addEventListener("keydown", (event) => {
    browsingKey = !event.altKey && !event.ctrlKey && !event.metaKey && BROWSING.test(event.key);
    if (event.key === "Enter" && stepped) { event.preventDefault(); apply(windowSelect); }
  });
  windowSelect.addEventListener("keyup", () => { browsingKey = false; });
  windowSelect.addEventListener("blur", (event) => { // focus moved on in the page (not the window left)
    if (stepped && event.relatedTarget) apply(event.relatedTarget.id ? event.relatedTarget : windowSelect);
  });
  form.addEventListener("change", (event) => {
    if (event.target !== windowSelect) { apply(event.target); return; }
    if (browsingKey) stepped = windowSelect.value !== shown; else apply(windowSelect);
    browsingKey = false;
  });
  form.addEventListener("submit", (event) => { if (event.submitter) keepFocus(event.submitter); }); // "Show"

  for (const row of document.querySelectorAll("#texts tr[data-key]")) {
    const ts = Number(row.dataset.ts);
    texts.set(row.dataset.key, {row: row, ts: ts});
    row.cells[2].textContent = localTime(ts);
  }
  for (const event of page.alerts) addAlertEvent(event, false);
  showFiring();
  retryNow(status);
  start();
})();
