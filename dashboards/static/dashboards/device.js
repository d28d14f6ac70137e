// Live device page: draw history, then append live readings; one redraw per animation frame.
(function () {
  "use strict";
  const MAX_POINTS = 5000;
  const key = JSON.parse(document.getElementById("device-key").textContent);
  const history = JSON.parse(document.getElementById("history").textContent);
  const charts = document.getElementById("charts");
  const state = document.getElementById("state");
  const series = new Map(); // key -> {div, pending: {x: [], y: []}}
  let lastTs = 0;
  let scheduled = false;

  function chartFor(name) {
    let s = series.get(name);
    if (s) return s;
    const div = document.createElement("div");
    div.className = "chart";
    charts.appendChild(div);
    Plotly.newPlot(div, [{x: [], y: [], mode: "lines", name: name}],
      {title: {text: name}, margin: {t: 30, l: 40, r: 10, b: 30}, xaxis: {type: "date"}},
      {responsive: true, displaylogo: false});
    s = {div: div, pending: {x: [], y: []}};
    series.set(name, s);
    return s;
  }

  function add(rows) {
    for (const [ts, name, value] of rows) {
      if (typeof value !== "number") continue;
      const s = chartFor(name);
      s.pending.x.push(new Date(ts));
      s.pending.y.push(value);
      if (ts > lastTs) lastTs = ts;
    }
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  }

  function flush() {
    scheduled = false;
    for (const s of series.values()) {
      if (!s.pending.x.length) continue;
      Plotly.extendTraces(s.div, {x: [s.pending.x], y: [s.pending.y]}, [0], MAX_POINTS);
      s.pending = {x: [], y: []};
    }
  }

  let delay = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/v1/devices/${encodeURIComponent(key)}/stream`);
    state.textContent = "connecting…";
    ws.onopen = () => { state.textContent = "live"; delay = 500; };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "readings") add(msg.readings.filter((r) => r[0] > lastTs));
    };
    ws.onclose = () => {
      state.textContent = "disconnected; retrying";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  add(history);
  connect();
})();
