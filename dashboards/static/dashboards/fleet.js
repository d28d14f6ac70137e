// Fleet page: one page of devices (the server rendered it into the HTML; this script keeps it live). Statuses,
// rates and latest values follow /ws/v1/fleet/stream (digests, alert events); the page's query is refetched
// from fleet.json every REFRESH_MS and after alert events (counts, rates, order, new devices). Typing in the
// filters (key or name, label, attribute) refetches at once, without a reload; sorting and paging are links (a sort
// link has the focus again once its page loaded). A session that ended (a refused refetch, the stream closed with
// 4401) stops the stream and the refetches and says so (live.js). Device-provided strings only ever reach the page
// through textContent.
(function () {
  "use strict";
  const {fetchInSession, onSessionEnd, sessionEnded, keepFocus, retryNow, reconnecting} = window.HubLive; // live.js
  const REFRESH_MS = 15000;
  const TYPING_MS = 250;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 4000; // live again within about 4 s of the hub returning (live.js follow alike)
  const config = JSON.parse(document.getElementById("fleet-config").textContent);
  const CLOSE = JSON.parse(document.getElementById("close-codes").textContent); // core/protocol.py
  const tbody = document.querySelector("#fleet tbody");
  const form = document.getElementById("fleet-filter");
  const state = document.getElementById("state");
  const rows = new Map(); // key -> {device, tr, cells}
  const dirty = new Set();
  let query = new URLSearchParams(config.query);
  let onlineWindow = 120000;
  let skew = 0; // server clock - browser clock, ms
  let scheduled = false;

  function now() { return Date.now() + skew; }

  function ago(ms) {
    if (ms === null) return "never";
    const s = Math.max(0, Math.round((now() - ms) / 1000));
    if (s >= 86400) return `${Math.floor(s / 86400)} d ago`;
    if (s >= 3600) return `${Math.floor(s / 3600)} h ago`;
    if (s >= 60) return `${Math.floor(s / 60)} min ago`;
    return `${s} s ago`;
  }

  function formatValue(value) {
    return typeof value === "number" ? String(Math.round(value * 1000) / 1000) : String(value);
  }

  function element(tag, text, className) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  // The same cells fleet.html renders.
  function rowFor(device) {
    const tr = document.createElement("tr");
    tr.dataset.key = device.key;
    const name = element("td");
    const link = element("a");
    link.href = config.device.replace("/KEY/", `/${encodeURIComponent(device.key)}/`);
    name.append(link, " ", element("small", device.key));
    const badge = element("span");
    name.append(badge);
    for (const [label, value] of Object.entries(device.labels || {}).sort()) {
      name.append(" ", element("span", `${label}=${value}`, "label"));
    }
    const row = {device: device, tr: tr, link: link, badge: badge, status: element("td"), seen: element("td"),
                 rate: element("td", "", "wide"), latest: element("td", "", "wide latest")};
    tr.append(name, row.status, row.seen, row.rate, row.latest);
    return row;
  }

  function online(device) { return device.seen !== null && now() - device.seen <= onlineWindow; }

  function drawTimes(row) {
    const d = row.device;
    const status = d.seen === null ? "never" : online(d) ? "online" : "offline";
    if (row.status.textContent !== status) {
      row.status.textContent = status;
      row.status.className = status === "online" ? "on" : "off";
    }
    row.seen.textContent = ago(d.seen);
  }

  function draw(row) {
    const d = row.device;
    row.link.textContent = d.name;
    drawTimes(row);
    row.rate.textContent = String(d.per_minute);
    row.tr.className = d.alert ? `sev-${d.alert}` : "";
    row.badge.replaceChildren();
    if (d.alert) row.badge.append(" ", element("span", d.alert, `badge sev-${d.alert}`));
    const parts = [];
    for (const [name, entry] of Object.entries(d.latest)) parts.push(element("b", name), `=${formatValue(entry[2])} `);
    row.latest.replaceChildren(...parts);
  }

  function markDirty(key) {
    dirty.add(key);
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  }

  function flush() {
    scheduled = false;
    for (const key of dirty) { const row = rows.get(key); if (row) draw(row); }
    dirty.clear();
  }

  function showCounts(snapshot) {
    for (const el of document.querySelectorAll("#counts [data-count]")) {
      const name = el.dataset.count;
      el.textContent = String(name in snapshot.counts ? snapshot.counts[name] : snapshot[name]);
    }
    document.getElementById("page-info").textContent = `page ${snapshot.page} of ${snapshot.pages}`;
    const empty = document.getElementById("empty");
    empty.hidden = snapshot.devices.length > 0;
    if (snapshot.total) empty.textContent = "No device matches.";
  }

  // A snapshot replaces the rows (100 at most), keeping live values newer than it (a digest may have overtaken
  // the query).
  function loadSnapshot(snapshot) {
    skew = snapshot.now - Date.now();
    onlineWindow = snapshot.online_window;
    const fresh = [];
    for (const device of snapshot.devices) {
      const known = rows.get(device.key);
      if (known) {
        for (const [name, entry] of Object.entries(known.device.latest)) {
          const latest = device.latest[name];
          if (!latest || latest[0] < entry[0]) device.latest[name] = entry;
        }
        if (known.device.seen !== null && (device.seen === null || known.device.seen > device.seen)) {
          device.seen = known.device.seen;
        }
      }
      const row = rowFor(device);
      draw(row);
      fresh.push(row);
    }
    rows.clear();
    for (const row of fresh) rows.set(row.device.key, row);
    tbody.replaceChildren(...fresh.map((row) => row.tr));
    showCounts(snapshot);
  }

  let refreshing = null;
  function refresh() {
    if (refreshing) return refreshing;
    const asked = query.toString();
    refreshing = fetchInSession(`${config.json}?${asked}`)
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((snapshot) => { if (asked === query.toString()) loadSnapshot(snapshot); else refresh(); })
      .catch(() => {}) // the next refresh asks again (a session ended says so itself)
      .finally(() => { refreshing = null; });
    return refreshing;
  }

  function applyDigest(devices) {
    for (const [key, digest] of Object.entries(devices)) {
      const row = rows.get(key);
      if (!row) continue; // not on this page: the next refresh counts it
      const d = row.device;
      d.seen = Math.max(d.seen || 0, digest.seen);
      d.per_minute += digest.n; // until the next snapshot recounts the last minute from the database
      for (const [name, entry] of Object.entries(digest.latest)) {
        const current = d.latest[name];
        if (!current || current[0] < entry[0]) d.latest[name] = entry;
      }
      markDirty(key);
    }
  }

  // The stream, reconnected after a backoff with jitter. `state` is a live region: it changes with the state only
  // (connecting, live, reconnecting), never with a countdown.
  let delay = BACKOFF_MIN_MS;
  let alertRefresh = null;
  let socket = null;
  let timer = 0; // pending reconnect
  let stopped = false; // the session ended
  function connect() {
    if (stopped) return;
    clearTimeout(timer);
    timer = 0;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/v1/fleet/stream`);
    socket = ws;
    if (!state.textContent) state.textContent = "connecting…";
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "subscribed") {
        state.textContent = "live";
        delay = BACKOFF_MIN_MS;
        reconnecting(connectNow, false);
        refresh();
      } else if (msg.type === "fleet") applyDigest(msg.devices);
      else if (msg.type === "alert" && !alertRefresh) {
        alertRefresh = setTimeout(() => { alertRefresh = null; refresh(); }, 300);
      }
    };
    ws.onclose = (event) => {
      if (ws !== socket || stopped) return;
      socket = null;
      if (event.code === CLOSE.UNAUTHENTICATED) { sessionEnded(); return; }
      state.textContent = "reconnecting…";
      reconnecting(connectNow, true);
      timer = setTimeout(connect, delay * (0.5 + Math.random() * 0.5));
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    };
  }

  function connectNow() { // waiting out the backoff: reconnect without waiting the rest
    if (timer) connect();
  }

  // Filters apply as they are typed: the query goes into the URL (shareable) and the first page is fetched.
  let typing = 0;
  function filtersChanged() {
    clearTimeout(typing);
    typing = setTimeout(() => {
      for (const name of ["q", "label", "attr"]) {
        const value = form.elements[name].value.trim();
        if (value) query.set(name, value); else query.delete(name);
      }
      query.delete("page");
      history.replaceState(null, "", `${location.pathname}?${query}`);
      refresh();
    }, TYPING_MS);
  }
  form.addEventListener("input", filtersChanged);
  form.addEventListener("submit", (event) => { event.preventDefault(); filtersChanged(); });

  for (const link of document.querySelectorAll("#fleet thead a[id]")) {
    link.addEventListener("click", (event) => { // a sort followed here (Enter or a click), not in a new tab
      if (!event.ctrlKey && !event.metaKey && !event.shiftKey && event.button === 0) keepFocus(link);
    });
  }

  loadSnapshot(JSON.parse(document.getElementById("fleet-snapshot").textContent));
  setInterval(() => { for (const row of rows.values()) drawTimes(row); }, 1000); // "… ago"
  const polling = setInterval(refresh, REFRESH_MS);
  onSessionEnd(() => {
    stopped = true;
    clearInterval(polling);
    clearTimeout(timer);
    reconnecting(connectNow, false);
    if (socket) { const ws = socket; socket = null; ws.close(); }
    state.textContent = "session ended";
  });
  window.addEventListener("online", connectNow); // the network is back: do not wait out the backoff
  retryNow(state);
  connect();
})();
