// Compare view: one chart per key, a trace per device, each device's window loaded (live.js windowFetch) and
// then followed on its own stream (live.js follow), as on the device page; zoom and CSV alike. Screen readers hear the
// page's state as a whole (every device live, or a connection lost), not each badge's countdown.
(function () {
  "use strict";
  const {follow, WindowCharts, windowFetch, showState, announce, retryNow} = window.HubLive; // live.js
  const page = JSON.parse(document.getElementById("compare-page").textContent);
  const keys = new Set(page.keys);
  const names = new Map(page.devices.map((d) => [d.key, d.name]));
  const url = (template, device) => template.replace("/KEY/", `/${encodeURIComponent(device)}/`);
  const newest = new Map(); // device -> newest numeric ts received: its stream's `since`

  const charts = new WindowCharts({
    container: document.getElementById("charts"),
    windowMs: page.window,
    api: (device) => url(page.api, device),
    shapes: () => [],
    name: (device) => names.get(device) || device,
    shown: (range) => {
      const params = new URLSearchParams({keys: page.keys.join(","), start: Math.floor(range[0]),
                                          end: Math.ceil(range[1]) + 1, agg: "NONE"});
      for (const item of document.querySelectorAll("#compare-devices li")) {
        item.querySelector("a.csv").href = `${url(page.csv, item.dataset.device)}?${params}`;
      }
    },
  });
  charts.skew = page.now - Date.now();

  function take(device, readings) {
    for (const [ts, key, value] of readings) {
      if (typeof value !== "number") continue;
      if (ts > (newest.get(device) || 0)) newest.set(device, ts);
      if (keys.has(key)) charts.add(key, device, ts, value);
    }
    charts.schedule();
  }

  async function start(device) {
    const badge = document.querySelector(`#compare-devices li[data-device="${CSS.escape(device)}"] .connection`);
    const end = charts.now();
    for (const key of page.keys) charts.series(key, device); // every device keeps its colour and legend entry
    try {
      const body = await windowFetch(url(page.api, device), page.keys, end - page.window, end, charts.pixels());
      charts.load(device, body);
      if (body.newest !== null) newest.set(device, body.newest);
    } catch (error) {
      showState(badge, "reconnecting", `could not load the window (${error.message})`);
    }
    follow(device, {
      since: () => Math.max(newest.get(device) || 0, charts.now() - page.window),
      readings: (readings) => take(device, readings),
      state: (state, text, login) => {
        showState(badge, state, text, login ? page.login : null);
        announceAll();
      },
    }, page.catchup);
  }

  // The page's state said once for all its devices: the first closed one's, else a lost connection, else live.
  function announceAll() {
    const states = Array.from(document.querySelectorAll("#compare-devices .connection"), (b) => b.dataset.state);
    const closed = document.querySelector("#compare-devices .connection[data-state=closed]");
    if (closed) announce("closed", closed.textContent);
    else if (states.includes("reconnecting")) announce("reconnecting");
    else if (states.every((state) => state === "live")) announce("live");
  }

  if (page.keys.length) {
    retryNow(document.getElementById("compare-devices"));
    for (const device of page.devices) start(device.key);
  }
})();
