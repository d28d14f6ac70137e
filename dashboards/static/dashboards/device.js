// Live device page (docs/dashboards.md, "Device page"): draw the server-rendered history, then follow the
// device's stream (docs/stream-protocol.md): wait for `subscribed`, send `since` (the newest reading received),
// apply the `history` that answers it, then the live `readings`. Each reading is drawn once: a point whose ts
// is not newer than what its chart already has is dropped. Device-provided text only ever goes through
// textContent.
(function () {
  "use strict";
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const CLOSE = JSON.parse(document.getElementById("close-codes").textContent); // core/protocol.py
  const FINAL = {[CLOSE.BAD_REQUEST]: "bad request", [CLOSE.UNAUTHENTICATED]: "not logged in",
                 [CLOSE.UNKNOWN_DEVICE]: "unknown device"};
  const REASONS = {1001: "server going away", 1006: "connection lost", [CLOSE.INTERNAL_ERROR]: "server error",
                   [CLOSE.SERVICE_RESTART]: "server restarting", [CLOSE.TOO_SLOW]: "too slow",
                   [CLOSE.STREAM_INTERRUPTED]: "stream interrupted"};
  const page = JSON.parse(document.getElementById("device-page").textContent);
  const picked = new Set(page.keys); // empty: every numeric key
  const charts = document.getElementById("charts");
  const status = document.getElementById("connection");
  const texts = new Map(); // key -> {row, ts}
  const series = new Map(); // key -> {div, last, plotted, pending: {x, y}}
  let newest = 0; // newest numeric ts received (any key): the `since` of the next connection
  let resume = null; // the `since` that continues a capped catch-up, when there is one
  let frame = 0;
  let socket = null;
  let attempt = 0; // failed connections in a row: the backoff exponent
  let retry = 0; // pending reconnect timer

  function setState(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  // ---- charts: one per numeric key, at most one redraw per animation frame, at most page.points points

  function take(readings) {
    for (const [ts, key, value] of readings) {
      if (typeof value === "string") { showText(key, ts, value); continue; }
      if (typeof value !== "number") continue;
      if (ts > newest) newest = ts; // unpicked keys too: the stream had them, no need to catch up on them
      if (picked.size && !picked.has(key)) continue;
      const s = seriesFor(key);
      if (ts <= s.last) continue; // already drawn (history and stream overlap): once only
      s.last = ts;
      s.pending.x.push(new Date(ts));
      s.pending.y.push(value);
      // A hidden tab gets no animation frames: keep only what the chart could show anyway.
      if (s.pending.x.length >= 2 * page.points) {
        s.pending.x.splice(0, s.pending.x.length - page.points);
        s.pending.y.splice(0, s.pending.y.length - page.points);
      }
    }
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function draw() {
    frame = 0;
    for (const [key, s] of series) {
      const {x, y} = s.pending;
      if (!x.length) continue;
      s.pending = {x: [], y: []};
      if (s.plotted) {
        Plotly.extendTraces(s.div, {x: [x], y: [y]}, [0], page.points);
      } else {
        s.plotted = true;
        const trace = {x: x.slice(-page.points), y: y.slice(-page.points), mode: "lines", name: key};
        const layout = {title: {text: key}, margin: {t: 30, l: 50, r: 10, b: 30}, xaxis: {type: "date"},
                        uirevision: key, shapes: thresholdLines(key), showlegend: false};
        Plotly.newPlot(s.div, [trace], layout, {responsive: true, displaylogo: false});
      }
    }
  }

  function seriesFor(key) {
    let s = series.get(key);
    if (s) return s;
    const div = document.createElement("div");
    div.className = "chart";
    div.dataset.key = key;
    const next = Array.from(charts.children).find((el) => el.dataset.key > key);
    charts.insertBefore(div, next || null); // charts in key order
    s = {div: div, last: -Infinity, plotted: false, pending: {x: [], y: []}};
    series.set(key, s);
    return s;
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
    banner.textContent = rules.length ? `Firing: ${rules.map((r) => `${r.name} (${r.severity})`).join(", ")}` : "";
  }

  function addAlertEvent(event, live) {
    const body = document.querySelector("#alert-events tbody");
    const row = document.createElement("tr");
    row.className = `sev-${event.rule.severity}`;
    const cells = [new Date(event.at).toLocaleString(), event.type, event.rule.name, event.rule.severity,
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
    t.row.cells[2].textContent = new Date(ts).toLocaleString();
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
    fetch(page.latest, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then((response) => (response.ok ? response.json() : {latest: {}}))
      .then((body) => {
        for (const [key, v] of Object.entries(body.latest)) {
          if (typeof v.value === "string") showText(key, v.ts, v.value);
        }
      })
      .catch(() => {}); // best effort: the next connection fetches again
  }

  // ---- the stream

  function connect(label) {
    retry = 0;
    setState("connecting", label || (attempt ? "reconnecting…" : "connecting…"));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/v1/devices/${encodeURIComponent(page.device)}/stream`);
    socket = ws;
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      const message = JSON.parse(event.data);
      if (message.type === "subscribed") {
        ws.send(JSON.stringify({since: resume === null ? Math.max(newest, page.start) : resume}));
      } else if (message.type === "history") {
        caughtUp(ws, message.readings);
      } else if (message.type === "readings") {
        take(message.readings);
      } else if (message.type === "alert") {
        addAlertEvent(message.event, true);
      }
    };
    ws.onclose = (event) => {
      if (ws === socket) closed(event.code);
    };
  }

  function caughtUp(ws, readings) {
    take(readings);
    resume = null;
    if (readings.length >= page.catchup) {
      // The catch-up is capped (oldest first): ask again for the rest. The cap may fall between readings of
      // one ts, so resume just before the last ts (the ones drawn already are dropped), unless the whole
      // page is that one ts.
      const first = readings[0][0];
      const last = readings[readings.length - 1][0];
      resume = first < last ? last - 1 : last;
      socket = null;
      ws.close();
      connect("catching up…");
      return;
    }
    attempt = 0;
    setState("live", "live");
    refreshTexts();
  }

  function closed(code) {
    socket = null;
    if (code in FINAL) {
      setState("closed", `closed: ${FINAL[code]}`);
      if (code === CLOSE.UNAUTHENTICATED) status.append(" — ", loginLink());
      return;
    }
    // Exponential backoff with jitter: a restarted hub is not met by every page at the same instant.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt++);
    const at = Date.now() + cap / 2 + Math.random() * (cap / 2);
    const reason = REASONS[code] || `closed (${code})`;
    const tick = () => {
      const left = at - Date.now();
      if (left <= 0) { connect(); return; }
      setState("reconnecting", `reconnecting in ${Math.ceil(left / 1000)} s (${reason})`);
      retry = setTimeout(tick, Math.min(left, 250));
    };
    tick();
  }

  function loginLink() {
    const link = document.createElement("a");
    link.href = `${page.login}?next=${encodeURIComponent(location.pathname + location.search)}`;
    link.textContent = "log in";
    return link;
  }

  window.addEventListener("online", () => {
    if (retry) { clearTimeout(retry); connect(); } // the network is back: do not wait out the backoff
  });

  const form = document.getElementById("picker");
  form.addEventListener("change", () => form.requestSubmit()); // the choice lives in the URL's query
  for (const row of document.querySelectorAll("#texts tr[data-key]")) {
    const ts = Number(row.dataset.ts);
    texts.set(row.dataset.key, {row: row, ts: ts});
    row.cells[2].textContent = new Date(ts).toLocaleString();
  }
  for (const event of page.alerts) addAlertEvent(event, false);
  showFiring();
  take(page.history);
  connect();
})();
