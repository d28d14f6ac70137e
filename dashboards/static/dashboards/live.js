// Live charts of whole windows at any rate (docs/dashboards.md, "Whole window at any rate"), shared by the
// device and compare pages, and what every page shares (docs/dashboards.md, "Sessions and outages"):
// - the session: a 401, a 403 or a login redirect on any fetch (fetchInSession), or a stream closed with 4401,
//   stops the page's live parts (onSessionEnd) and says so once, with a link to log in again;
// - focus kept across a reload (keepFocus), state changes announced (announce), "Retry now" (retryNow);
// - follow(): one device stream (docs/stream-protocol.md): wait for `subscribed`, send `since`, apply the
//   `history`, then the live `readings` (merged: many per key, several flushes per message); reconnect with
//   exponential backoff (capped at 2-4 s) and jitter; a full catch-up asks again for the rest.
// - Series: one line over the window: min/max buckets (about one per pixel) for the older part, then at most
//   TAIL raw readings; readings leaving the tail fold into buckets of the same epoch-aligned interval the
//   server used, so the line stays one min/max pair per pixel however fast the device sends.
// - windowFetch(): the window's data from /api/v1/devices/<KEY>/window (history/answers.py window_answer).
(function () {
  "use strict";
  const BACKOFF_MIN_MS = 500;
  // Capped low: after a hub restart every page is live again within about 4 s of it returning (issue 25: at 30 s, a
  // 25 s outage kept device pages waiting 17-23 s); the jitter still spreads the pages' returns over 2 s.
  const BACKOFF_MAX_MS = 4000;
  const TAIL = 2000; // raw readings kept per series (history/selectors.py WINDOW_TAIL_POINTS)
  const CODES = document.getElementById("close-codes"); // pages with streams
  const CLOSE = CODES ? JSON.parse(CODES.textContent) : {}; // core/protocol.py
  const LOGIN = document.currentScript.dataset.login; // the login page's path
  const FINAL = {[CLOSE.BAD_REQUEST]: "bad request", [CLOSE.UNAUTHENTICATED]: "not logged in",
                 [CLOSE.TOKEN_REVOKED]: "not allowed",
                 [CLOSE.UNKNOWN_DEVICE]: "unknown device"};
  const REASONS = {1001: "server going away", 1006: "connection lost", [CLOSE.INTERNAL_ERROR]: "server error",
                   [CLOSE.SERVICE_RESTART]: "server restarting", [CLOSE.TOO_SLOW]: "too slow",
                   [CLOSE.STREAM_INTERRUPTED]: "stream interrupted"};

  // ---- the session: once it ended, nothing live goes on and the page says so, once

  const endings = []; // what stops when the session ends: streams, polls
  let sessionOver = false;

  // `stop` runs when the session ends (at once if it has).
  function onSessionEnd(stop) {
    if (sessionOver) stop(); else endings.push(stop);
  }

  function loginUrl() {
    return `${LOGIN}?next=${encodeURIComponent(location.pathname + location.search)}`;
  }

  function sessionEnded() {
    if (sessionOver) return;
    sessionOver = true;
    for (const stop of endings.splice(0)) stop();
    const banner = document.createElement("p");
    banner.id = "session-ended";
    banner.className = "sev-critical";
    banner.setAttribute("role", "alert");
    const link = document.createElement("a");
    link.href = loginUrl();
    link.textContent = "log in again";
    banner.append("Session ended — ", link);
    document.querySelector("main").prepend(banner);
  }

  class SessionEnded extends Error {
    constructor() { super("session ended"); this.name = "SessionEnded"; }
  }

  // fetch() for the pages' scripts: an answer that says the session ended (401, 403, or sent to the login page)
  // ends it and throws, so no fetch fails silently for that reason (issue 25: a zoom after a logout drew nothing).
  async function fetchInSession(url, options) {
    const response = await fetch(url, Object.assign({credentials: "same-origin"}, options));
    const toLogin = response.redirected && new URL(response.url).pathname === LOGIN;
    if (response.status === 401 || response.status === 403 || toLogin) {
      sessionEnded();
      throw new SessionEnded();
    }
    return response;
  }

  // ---- what screen readers hear: state changes only (the badges count down every second: not live regions)

  const announcer = document.createElement("p");
  announcer.className = "visually-hidden";
  announcer.setAttribute("role", "status");
  document.querySelector("main").append(announcer);
  const SAID = {live: "live", reconnecting: "connection lost: reconnecting"};

  // A stream's state (showState's), said when it differs from the last one said; "connecting" is not.
  function announce(state, text) {
    const words = state === "closed" ? text : SAID[state];
    if (words && words !== announcer.textContent) announcer.textContent = words;
  }

  // ---- controls that reload the page keep the keyboard's place (WCAG 3.2.2): the control that changed is
  // remembered for the next load of this path, which focuses it again

  const FOCUS = "hub-focus"; // sessionStorage: {path, id}

  function keepFocus(control) {
    try {
      sessionStorage.setItem(FOCUS, JSON.stringify({path: location.pathname, id: control.id}));
    } catch (error) { /* storage refused (private mode, full): the focus starts at the top, as without this */ }
  }

  function restoreFocus() {
    let kept = null;
    try {
      kept = JSON.parse(sessionStorage.getItem(FOCUS) || "null");
      sessionStorage.removeItem(FOCUS);
    } catch (error) { return; }
    const control = kept && kept.path === location.pathname && document.getElementById(kept.id);
    if (control) control.focus();
  }

  // ---- "Retry now": shown from a lost connection until every stream of the page is live again

  const down = new Set(); // a reconnect-now function for each stream between a lost connection and live
  let retryButton = null;
  let retryPlace = null;

  function retryNow(place) {
    retryButton = document.createElement("button");
    retryButton.type = "button";
    retryButton.className = "retry-now";
    retryButton.textContent = "Retry now";
    retryButton.hidden = true;
    retryButton.addEventListener("click", () => { for (const again of Array.from(down)) again(); });
    place.after(retryButton);
    retryPlace = place;
    place.tabIndex = -1; // where the keyboard goes when the button leaves under it
  }

  // A stream lost its connection (`waiting`) or is live again, or done for good.
  function reconnecting(again, waiting) {
    if (waiting) down.add(again); else down.delete(again);
    if (!retryButton || retryButton.hidden === !down.size) return;
    if (!down.size && document.activeElement === retryButton) retryPlace.focus();
    retryButton.hidden = !down.size;
  }

  // ---- one device's stream

  // on: {since() -> ms, readings(list), alert(event), state(state, text, final), live()}; catchup: the server's cap.
  // Returns {retry(): reconnect now if waiting, stop()}.
  function follow(device, on, catchup) {
    let socket = null;
    let attempt = 0; // failed connections in a row: the backoff exponent
    let timer = 0; // pending reconnect
    let resume = null; // the `since` that continues a capped catch-up
    let stopped = false; // the session ended: no more connections

    function connect(label) {
      if (stopped) return;
      clearTimeout(timer);
      timer = 0;
      on.state("connecting", label || (attempt ? "reconnecting…" : "connecting…"));
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(`${scheme}//${location.host}/ws/v1/devices/${encodeURIComponent(device)}/stream`);
      socket = ws;
      ws.onmessage = (event) => {
        if (ws !== socket) return;
        const message = JSON.parse(event.data);
        if (message.type === "subscribed") ws.send(JSON.stringify({since: resume === null ? on.since() : resume}));
        else if (message.type === "history") caughtUp(ws, message.readings);
        else if (message.type === "readings") on.readings(message.readings);
        else if (message.type === "alert" && on.alert) on.alert(message.event);
      };
      ws.onclose = (event) => { if (ws === socket) closed(event.code); };
    }

    function caughtUp(ws, readings) {
      on.readings(readings);
      resume = null;
      if (readings.length >= catchup) {
        // Capped (oldest first): ask again for the rest, from just before the last ts (the ones drawn already
        // are dropped), unless the whole page is that one ts.
        const first = readings[0][0];
        const last = readings[readings.length - 1][0];
        resume = first < last ? last - 1 : last;
        socket = null;
        ws.close();
        connect("catching up…");
        return;
      }
      attempt = 0;
      reconnecting(reconnectNow, false);
      on.state("live", "live");
      if (on.live) on.live();
    }

    function closed(code) {
      socket = null;
      if (stopped) return;
      if (code === CLOSE.UNAUTHENTICATED) { sessionEnded(); return; } // which stops this stream too
      if (code in FINAL) { reconnecting(reconnectNow, false); on.state("closed", `closed: ${FINAL[code]}`); return; }
      // Exponential backoff with jitter: a restarted hub is not met by every page at the same instant.
      const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt++);
      const at = Date.now() + cap / 2 + Math.random() * (cap / 2);
      const reason = REASONS[code] || `closed (${code})`;
      reconnecting(reconnectNow, true);
      const tick = () => {
        const left = at - Date.now();
        if (left <= 0) { connect(); return; }
        on.state("reconnecting", `reconnecting in ${Math.ceil(left / 1000)} s (${reason})`);
        timer = setTimeout(tick, Math.min(left, 250));
      };
      tick();
    }

    function reconnectNow() { // waiting out the backoff: reconnect without waiting the rest
      if (timer) connect();
    }

    function stop() {
      stopped = true;
      clearTimeout(timer);
      reconnecting(reconnectNow, false);
      if (socket) { const ws = socket; socket = null; ws.close(); }
      on.state("closed", `closed: ${FINAL[CLOSE.UNAUTHENTICATED]}`, true);
    }

    window.addEventListener("online", reconnectNow); // the network is back: do not wait out the backoff
    onSessionEnd(stop);
    connect();
    return {retry: reconnectNow, stop: stop};
  }

  // ---- one line over a window

  class Series {
    constructor() {
      this.interval = 1000;
      this.buckets = []; // [start ms, min, max], oldest first
      this.tx = []; // raw tail: ts, oldest first
      this.ty = []; // raw tail: values
      this.last = -Infinity; // newest ts taken: older or equal ones are duplicates (history/live overlap)
    }

    load(data, interval) {
      this.interval = interval;
      this.buckets = data.buckets.slice();
      this.tx = data.raw.map((r) => r[0]);
      this.ty = data.raw.map((r) => r[1]);
      this.last = this.tx.length ? this.tx[this.tx.length - 1] : -Infinity;
    }

    add(ts, value) {
      if (ts <= this.last) return false;
      this.last = ts;
      this.tx.push(ts);
      this.ty.push(value);
      return true;
    }

    // Fold what leaves the tail into buckets; forget what left the window.
    compact(start) {
      const extra = this.tx.length - TAIL;
      const step = this.interval;
      for (let i = 0; i < extra; i++) {
        const t = this.tx[i] - (this.tx[i] % step);
        const v = this.ty[i];
        const b = this.buckets[this.buckets.length - 1];
        if (b && b[0] === t) { if (v < b[1]) b[1] = v; if (v > b[2]) b[2] = v; }
        else this.buckets.push([t, v, v]);
      }
      let drop = Math.max(0, extra);
      while (drop < this.tx.length && this.tx[drop] < start) drop++;
      if (drop) { this.tx.splice(0, drop); this.ty.splice(0, drop); }
      let old = 0;
      while (old < this.buckets.length && this.buckets[old][0] + step <= start) old++;
      if (old) this.buckets.splice(0, old);
    }

    // Plotly's arrays: each bucket as its min then its max at the bucket's start, then the raw tail.
    xy() {
      const n = this.buckets.length;
      const x = new Array(2 * n + this.tx.length);
      const y = new Array(x.length);
      for (let i = 0; i < n; i++) {
        const [t, lo, hi] = this.buckets[i];
        const at = new Date(t);
        x[2 * i] = at; y[2 * i] = lo;
        x[2 * i + 1] = at; y[2 * i + 1] = hi;
      }
      for (let i = 0; i < this.tx.length; i++) { x[2 * n + i] = new Date(this.tx[i]); y[2 * n + i] = this.ty[i]; }
      return {x: x, y: y};
    }
  }

  // ---- the window's data

  // A 429 says the hub is serving as many heavy reads as it takes (docs/history.md, "Bounded answers"): the
  // window is asked again after the answer's Retry-After, a few times; then the 429's message is the error (the
  // pages then go on with live readings only) rather than the page waiting behind someone's export.
  const WINDOW_TRIES = 5;

  async function windowFetch(url, keys, start, end, px, signal) {
    const params = new URLSearchParams({keys: keys.join(","), start: start, end: end, px: Math.round(px)});
    for (let tries = 1; ; tries++) {
      const response = await fetchInSession(`${url}?${params}`, {signal: signal});
      const body = await response.json();
      if (response.status === 429 && tries < WINDOW_TRIES) {
        await pause(1000 * (Number(response.headers.get("Retry-After")) || 1), signal);
        continue;
      }
      if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
      return body;
    }
  }

  function pause(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, {once: true});
    });
  }

  // The status badge of a stream (device page) or of one device of several (compare page).
  function showState(el, state, text, login) {
    el.dataset.state = state;
    el.textContent = text;
    if (login) {
      const link = document.createElement("a");
      link.href = `${login}?next=${encodeURIComponent(location.pathname + location.search)}`;
      link.textContent = "log in";
      el.append(" — ", link);
    }
  }

  // ---- charts of a window: one per key, a trace per device; live, or zoomed on a range fetched finer

  const EMPTY = new Series();

  class WindowCharts {
    // o: {container, windowMs, api(device) -> window URL, shapes(key) -> Plotly shapes, name(device) -> text,
    //     shown(range) -> called after each draw with the [start, end] drawn}
    constructor(o) {
      this.o = o;
      this.charts = new Map(); // key -> {div, key, traces: Map(device -> Series), bound}
      this.devices = []; // trace order (colours) across charts
      this.interval = 0; // the buckets of the window's last answer (ms)
      this.skew = 0; // server clock - browser clock, ms
      this.zoom = null; // {start, end, series: Map("key device" -> Series) | null while loading}
      this.frame = 0; // pending animation frame
      this.timer = 0; // pending pacing timeout
      this.nextDraw = 0; // performance.now() before which no chart is redrawn
      this.revision = 0;
      this.inFlight = null;
      const moving = setInterval(() => this.schedule(), 1000); // the window moves even when nothing arrives
      onSessionEnd(() => clearInterval(moving));
      if (!document.querySelector(".window-note, .hint")?.textContent.includes("zoom")) { // once per page
        const hint = document.createElement("p");
        hint.className = "hint";
        hint.textContent = "Drag across a chart to zoom in; double-click it to return to live.";
        o.container.before(hint);
      }
    }

    now() { return Date.now() + this.skew; }
    pixels() { return Math.max(100, (this.o.container.clientWidth || 800) - 70); }

    chart(key) {
      let c = this.charts.get(key);
      if (c) return c;
      const div = document.createElement("div");
      div.className = "chart";
      div.dataset.key = key;
      const next = Array.from(this.o.container.children).find((el) => el.dataset.key > key);
      this.o.container.insertBefore(div, next || null); // charts in key order
      c = {div: div, key: key, traces: new Map(), bound: false, dirty: true, drawn: 0};
      this.charts.set(key, c);
      return c;
    }

    series(key, device) {
      const c = this.chart(key);
      let s = c.traces.get(device);
      if (!s) {
        s = new Series();
        if (this.interval) s.interval = this.interval; // a key first seen live folds like the others
        c.traces.set(device, s);
        if (!this.devices.includes(device)) this.devices.push(device);
      }
      return s;
    }

    // A window's answer (windowFetch) for one device; then live readings go through add().
    load(device, body) {
      this.interval = body.interval;
      for (const [key, data] of Object.entries(body.series)) this.series(key, device).load(data, body.interval);
      this.schedule();
    }

    add(key, device, ts, value) {
      const s = this.series(key, device);
      if (s.add(ts, value) && s.tx.length >= 2 * TAIL) s.compact(-Infinity); // a hidden tab gets no frames
    }

    // Redraws are paced by what they cost: one chart per task (never all in one), and the next no sooner than
    // twice the last one took, so drawing holds at most about a third of the main thread however fast
    // readings arrive, and the page stays responsive (tests/test_live_pages.py measures it). Each turn goes to
    // the chart drawn longest ago, so on a slow machine every chart advances, not only the first.
    schedule() {
      for (const c of this.charts.values()) c.dirty = true;
      this.kick();
    }

    kick() {
      if (this.frame || this.timer) return;
      const wait = this.nextDraw - performance.now();
      if (wait > 0) this.timer = setTimeout(() => { this.timer = 0; this.kick(); }, wait);
      else this.frame = requestAnimationFrame(() => this.drawNext());
    }

    drawNext() {
      this.frame = 0;
      let c = null;
      for (const chart of this.charts.values()) if (chart.dirty && (!c || chart.drawn < c.drawn)) c = chart;
      if (!c) return;
      c.dirty = false;
      c.drawn = performance.now();
      const began = performance.now();
      this.draw(c);
      this.nextDraw = performance.now() + 2 * (performance.now() - began);
      if (Array.from(this.charts.values()).some((chart) => chart.dirty)) this.kick();
    }

    draw(c) {
      const end = this.now();
      const start = end - this.o.windowMs;
      const range = this.zoom ? [this.zoom.start, this.zoom.end] : [start, end];
      const traces = [];
      for (const [device, s] of c.traces) {
        let xy;
        if (this.zoom && this.zoom.series) xy = (this.zoom.series.get(`${c.key} ${device}`) || EMPTY).xy();
        else { s.compact(start); xy = s.xy(); }
        const colour = HubCharts.COLORS[this.devices.indexOf(device) % HubCharts.COLORS.length];
        traces.push({x: xy.x, y: xy.y, mode: "lines", name: this.o.name(device), line: {width: 1, color: colour}});
      }
      const layout = HubCharts.themed({
        title: {text: c.key, x: 0, xanchor: "left"}, margin: {t: 30, l: 50, r: 40, b: 30},
        datarevision: ++this.revision,
        xaxis: {type: "date", range: range.map(HubCharts.toPlotly)}, shapes: this.o.shapes(c.key),
        showlegend: traces.length > 1, legend: {orientation: "h", y: -0.2},
      });
      Plotly.react(c.div, traces, layout, HubCharts.config());
      HubCharts.keyboardToolbar(c.div);
      if (!c.bound) {
        c.bound = true;
        c.div.on("plotly_relayout", (event) => this.relayout(event));
      }
      if (this.o.shown) this.o.shown(range);
    }

    // A zoom on any chart zooms them all and fetches that range finer; a double-click goes back to live.
    relayout(event) {
      const zoom = HubCharts.zoomOf(event);
      if (!zoom) return;
      if (this.inFlight) this.inFlight.abort();
      if (zoom.reset) { this.zoom = null; this.schedule(); return; }
      this.zoom = {start: zoom.start, end: zoom.end, series: null};
      const controller = new AbortController();
      this.inFlight = controller;
      const keys = Array.from(this.charts.keys());
      const zoomed = new Map();
      Promise.all(this.devices.map((device) =>
        windowFetch(this.o.api(device), keys, zoom.start, zoom.end, this.pixels(), controller.signal).then((body) => {
          for (const [key, data] of Object.entries(body.series)) {
            const s = new Series();
            s.load(data, body.interval);
            zoomed.set(`${key} ${device}`, s);
          }
        }))).then(() => {
        if (this.zoom && this.inFlight === controller) { this.zoom.series = zoomed; this.schedule(); }
      }).catch(() => {}); // aborted by the next zoom, or failed (a session ended says so): the live data stays drawn
      this.schedule();
    }
  }

  restoreFocus();
  window.HubLive = {follow, Series, WindowCharts, windowFetch, showState, TAIL, fetchInSession, onSessionEnd,
                    sessionEnded, SessionEnded, announce, keepFocus, retryNow, reconnecting};
})();
