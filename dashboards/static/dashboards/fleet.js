// Fleet page: every device's status, rate and latest values; live from /ws/v1/fleet/stream (digests and
// alert events), refreshed from fleet.json every REFRESH_MS for rates, statuses and new devices.
// Device-provided strings only ever reach the page through textContent.
(function () {
  "use strict";
  const REFRESH_MS = 15000;
  const urls = JSON.parse(document.getElementById("fleet-urls").textContent);
  const CLOSE = JSON.parse(document.getElementById("close-codes").textContent); // core/protocol.py
  const tbody = document.querySelector("#fleet tbody");
  const filter = document.getElementById("filter");
  const summary = document.getElementById("summary");
  const state = document.getElementById("state");
  const rows = new Map(); // key -> {device, tr, cells}
  const dirty = new Set();
  let onlineWindow = 120000;
  let skew = 0; // server clock - browser clock, ms
  let scheduled = false;

  function now() { return Date.now() + skew; }

  function ago(ms) {
    const s = Math.max(0, Math.round((now() - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function formatValue(value) {
    return typeof value === "number" ? String(Math.round(value * 1000) / 1000) : String(value);
  }

  function cell(tr) { const td = document.createElement("td"); tr.appendChild(td); return td; }

  function rowFor(device) {
    let row = rows.get(device.key);
    if (row) return row;
    const tr = document.createElement("tr");
    const name = cell(tr);
    const link = document.createElement("a");
    link.href = urls.device.replace("/KEY/", `/${encodeURIComponent(device.key)}/`);
    const small = document.createElement("small");
    name.append(link, " ", small);
    row = {device: device, tr: tr, link: link, small: small, badge: null,
           status: cell(tr), seen: cell(tr), rate: cell(tr), latest: cell(tr)};
    rows.set(device.key, row);
    return row;
  }

  function drawTimes(row) {
    const d = row.device;
    const online = d.seen !== null && now() - d.seen <= onlineWindow;
    row.status.textContent = online ? "online" : "offline";
    row.status.className = online ? "on" : "off";
    row.seen.textContent = d.seen === null ? "never" : ago(d.seen);
  }

  function draw(row) {
    const d = row.device;
    row.link.textContent = d.name;
    row.small.textContent = d.key;
    drawTimes(row);
    row.rate.textContent = String(d.per_minute);
    row.tr.className = d.alert ? `sev-${d.alert}` : "";
    if (row.badge) row.badge.remove();
    row.badge = null;
    if (d.alert) {
      row.badge = document.createElement("span");
      row.badge.className = `badge sev-${d.alert}`;
      row.badge.textContent = d.alert;
      row.link.parentNode.append(" ", row.badge);
    }
    const parts = [];
    for (const [name, entry] of Object.entries(d.latest)) {
      const b = document.createElement("b");
      b.textContent = name;
      parts.push(b, `=${formatValue(entry[2])} `);
    }
    row.latest.replaceChildren(...parts);
  }

  function matches(device, needle) {
    return !needle || device.key.toLowerCase().includes(needle) || device.name.toLowerCase().includes(needle);
  }

  function applyFilter() {
    const needle = filter.value.trim().toLowerCase();
    let shown = 0, online = 0, alerting = 0;
    for (const row of rows.values()) {
      const show = matches(row.device, needle);
      row.tr.hidden = !show;
      if (show) shown += 1;
      if (row.device.seen !== null && now() - row.device.seen <= onlineWindow) online += 1;
      if (row.device.alert) alerting += 1;
    }
    summary.textContent = `${rows.size} devices, ${online} online, ${alerting} alerting` +
      (shown !== rows.size ? `, ${shown} shown` : "");
    document.getElementById("empty").hidden = rows.size > 0;
  }

  function markDirty(key) {
    dirty.add(key);
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  }

  function flush() {
    scheduled = false;
    for (const key of dirty) { const row = rows.get(key); if (row) draw(row); }
    dirty.clear();
    applyFilter();
  }

  function loadSnapshot(snapshot) {
    skew = snapshot.now - Date.now();
    onlineWindow = snapshot.online_window;
    const fragment = document.createDocumentFragment();
    for (const device of snapshot.devices) {
      const known = rows.get(device.key);
      if (known) {
        // Keep live values newer than the snapshot (the digest may have overtaken the query).
        for (const [name, entry] of Object.entries(known.device.latest)) {
          const fresh = device.latest[name];
          if (!fresh || fresh[0] < entry[0]) device.latest[name] = entry;
        }
        if (known.device.seen !== null && (device.seen === null || known.device.seen > device.seen)) {
          device.seen = known.device.seen;
        }
        known.device = device;
      } else {
        fragment.appendChild(rowFor(device).tr);
      }
      markDirty(device.key);
    }
    tbody.appendChild(fragment);
  }

  let refreshing = null;
  function refresh() {
    if (refreshing) return refreshing;
    refreshing = fetch(urls.json, {credentials: "same-origin"})
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then(loadSnapshot)
      .catch(() => {})
      .finally(() => { refreshing = null; });
    return refreshing;
  }

  function applyDigest(devices) {
    let unknown = false;
    for (const [key, digest] of Object.entries(devices)) {
      const row = rows.get(key);
      if (!row) { unknown = true; continue; }
      const d = row.device;
      d.seen = Math.max(d.seen || 0, digest.seen);
      d.per_minute += digest.n; // until the next snapshot recounts the last minute from the database
      for (const [name, entry] of Object.entries(digest.latest)) {
        const current = d.latest[name];
        if (!current || current[0] < entry[0]) d.latest[name] = entry;
      }
      markDirty(key);
    }
    if (unknown) refresh();
  }

  let delay = 500;
  let alertRefresh = null;
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/v1/fleet/stream`);
    state.textContent = "connecting…";
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "subscribed") { state.textContent = "live"; delay = 500; refresh(); }
      else if (msg.type === "fleet") applyDigest(msg.devices);
      else if (msg.type === "alert" && !alertRefresh) {
        alertRefresh = setTimeout(() => { alertRefresh = null; refresh(); }, 300);
      }
    };
    ws.onclose = (event) => {
      if (event.code === CLOSE.UNAUTHENTICATED) { state.textContent = "logged out"; return; }
      const wait = delay * (0.5 + Math.random());
      state.textContent = `disconnected; retrying in ${Math.ceil(wait / 1000)} s`;
      setTimeout(connect, wait);
      delay = Math.min(delay * 2, 15000);
    };
  }

  filter.addEventListener("input", applyFilter);
  loadSnapshot(JSON.parse(document.getElementById("fleet-snapshot").textContent));
  setInterval(() => { for (const row of rows.values()) drawTimes(row); applyFilter(); }, 1000); // "… ago"
  setInterval(refresh, REFRESH_MS);
  connect();
})();
