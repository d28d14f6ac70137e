// History page: pick a range, keys and an aggregate; draw what the history API answers; zooming re-queries
// the zoomed range at a finer interval; the CSV link always carries the parameters of the drawn answer.
// Time zones: the API speaks UTC milliseconds only. The page shows and accepts local time: the range inputs
// are read and written with local Date fields, and Plotly draws Date objects (and reports zoom ranges) in
// the browser's local time, which fromPlotly() converts back. A refused fetch (the session ended) says so once, with
// a link to log in again (live.js fetchInSession).
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("history-config").textContent);
  const form = document.getElementById("history-form");
  const chart = document.getElementById("history-chart");
  const csvLink = document.getElementById("history-csv");
  const status = document.getElementById("history-status");
  const ZOOM_DEBOUNCE_MS = 400;
  const GAP_FACTOR = 3; // a silence this many times the usual spacing breaks the line
  const MARKERS_UP_TO = 150; // sparse series also show their points

  const state = Object.assign({}, config.choices); // keys, range, start, end, agg, interval (null: auto)
  let picked = {start: state.start, end: state.end, range: state.range}; // double-click returns to it
  let inFlight = null; // AbortController of the current request
  let zoomTimer = null;

  const {fromLocal, toPlotly, toLocalInput, zoomOf, themed, formatInterval, COLORS} = window.HubCharts; // charts.js
  const {fetchInSession} = window.HubLive; // live.js


  // The API parameters of the current choices (interval left out when "auto": the API picks and echoes it).
  function apiParams() {
    const params = new URLSearchParams({keys: state.keys.join(","), start: state.start, end: state.end, agg: state.agg});
    if (state.agg === "NONE") {
      params.set("limit", config.maxLimit);
    } else {
      if (state.interval) params.set("interval", state.interval);
      if (state.agg === "AVG") params.set("band", "1");
    }
    return params;
  }

  function setStatus(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function showRangeInputs() {
    form.elements.start_local.value = toLocalInput(state.start);
    form.elements.end_local.value = toLocalInput(state.end);
    for (const radio of form.querySelectorAll("input[name=range]")) radio.checked = radio.value === state.range;
  }

  // The page URL keeps the choices (a preset stays relative to "now" on reload; custom keeps its instants).
  function rememberInUrl() {
    const page = new URLSearchParams({range: state.range, keys: state.keys.join(","), agg: state.agg});
    if (state.interval) page.set("interval", state.interval);
    if (state.range === "custom") { page.set("start", state.start); page.set("end", state.end); }
    history.replaceState(null, "", `${location.pathname}?${page}`);
  }

  function readForm() {
    state.keys = Array.from(form.querySelectorAll("input[name=keys]:checked"), (box) => box.value);
    state.agg = form.elements.agg.value;
    state.interval = form.elements.interval.value ? Number(form.elements.interval.value) : null;
    state.range = form.querySelector("input[name=range]:checked").value;
    if (state.range in config.presets) {
      state.end = Date.now();
      state.start = state.end - config.presets[state.range];
    } else {
      const start = fromLocal(form.elements.start_local.value);
      const end = fromLocal(form.elements.end_local.value);
      if (start === null || end === null || start >= end) {
        setStatus("Choose a start before the end.", true);
        return false;
      }
      state.start = start;
      state.end = end;
    }
    picked = {start: state.start, end: state.end, range: state.range};
    return true;
  }

  async function load() {
    rememberInUrl();
    if (!state.keys.length) {
      Plotly.react(chart, [], {height: 320});
      setStatus("Choose at least one key.", true);
      return;
    }
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const params = apiParams();
    setStatus("loading…");
    let body;
    try {
      const response = await fetchInSession(`${config.api}?${params}`, {signal: controller.signal});
      body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    } catch (error) {
      if (error.name !== "AbortError") setStatus(`Could not load: ${error.message}`, true);
      return;
    }
    if (inFlight !== controller) return;
    inFlight = null;
    // Export exactly this answer: same keys, instants, aggregate and the interval the API used.
    if (body.interval) params.set("interval", body.interval);
    csvLink.href = `${config.csv}?${params}`;
    draw(body);
  }

  // The usual distance between points: buckets finer than a device's cadence are mostly empty, and that is
  // not a gap; a silence several times longer than usual is.
  function gapAfter(points, interval) {
    const steps = [];
    for (let i = 1; i < points.length; i++) steps.push(points[i].ts - points[i - 1].ts);
    steps.sort((a, b) => a - b);
    const usual = steps.length ? steps[Math.floor(steps.length / 2)] : 0;
    return GAP_FACTOR * Math.max(interval || 0, usual);
  }

  // Runs of points without a gap between them.
  function segments(points, interval) {
    const gap = gapAfter(points, interval);
    const runs = [];
    let run = [];
    for (const p of points) {
      if (run.length && p.ts - run[run.length - 1].ts > gap) { runs.push(run); run = []; }
      run.push(p);
    }
    if (run.length) runs.push(run);
    return runs;
  }

  // A line that breaks across gaps (a null between runs) instead of drawing through them.
  function line(runs, withBand) {
    const x = [];
    const y = [];
    const customdata = [];
    for (const run of runs) {
      if (x.length) { x.push(null); y.push(null); customdata.push(null); }
      for (const p of run) {
        x.push(new Date(p.ts));
        y.push(p.value);
        customdata.push(withBand ? [p.min, p.max] : null);
      }
    }
    return withBand ? {x: x, y: y, customdata: customdata} : {x: x, y: y};
  }

  function fade(hex) { // "#rrggbb" -> a light translucent fill of the same colour
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, 0.2)`;
  }

  // The min/max band: one closed shape per run (max forward, min backward), so gaps stay empty.
  function band(runs) {
    const x = [];
    const y = [];
    for (const run of runs) {
      if (x.length) { x.push(null); y.push(null); }
      for (const p of run) { x.push(new Date(p.ts)); y.push(p.max); }
      for (let i = run.length - 1; i >= 0; i--) { x.push(new Date(run[i].ts)); y.push(run[i].min); }
    }
    return {x: x, y: y};
  }

  function tracesFor(key, index, points, body) {
    const axis = index === 0 ? "y" : `y${index + 1}`;
    const color = COLORS[index % COLORS.length];
    const runs = segments(points, body.interval);
    const style = {yaxis: axis, mode: points.length <= MARKERS_UP_TO ? "lines+markers" : "lines",
      marker: {size: 4, color: color}, line: {color: color, width: body.agg === "NONE" ? 1 : 1.5}};
    const name = body.agg === "NONE" ? key : `${key} ${body.agg.toLowerCase()}`;
    const main = Object.assign({name: name}, style, line(runs, body.agg === "AVG"));
    if (body.agg !== "AVG") return [main];
    main.hovertemplate = "%{y:.4~g} (min %{customdata[0]:.4~g}, max %{customdata[1]:.4~g})";
    const shape = band(runs);
    return [{x: shape.x, y: shape.y, yaxis: axis, name: `${key} min–max`, mode: "lines", fill: "toself",
      fillcolor: fade(color), line: {width: 0}, hoverinfo: "skip", showlegend: false}, main];
  }

  function draw(body) {
    const keys = Object.keys(body.data);
    const traces = [];
    const layout = {
      grid: {rows: keys.length, columns: 1, pattern: "coupled", roworder: "top to bottom"},
      height: Math.max(320, 220 * keys.length),
      margin: {t: 20, l: 60, r: 20, b: 40},
      xaxis: {type: "date", range: [toPlotly(body.start), toPlotly(body.end)]},
      showlegend: true,
      legend: {orientation: "h"},
      hovermode: "x unified",
    };
    let count = 0;
    keys.forEach((key, index) => {
      traces.push(...tracesFor(key, index, body.data[key], body));
      layout[index === 0 ? "yaxis" : `yaxis${index + 1}`] = {title: {text: key}};
      count += body.data[key].length;
    });
    Plotly.react(chart, traces, themed(layout), HubCharts.config());
    HubCharts.keyboardToolbar(chart);
    const what = body.agg === "NONE" ? "raw points" : `${body.agg} every ${formatInterval(body.interval)}`;
    const full = body.agg === "NONE" && keys.some((k) => body.data[k].length >= config.maxLimit);
    setStatus(`${count.toLocaleString()} points, ${what}` +
      (full ? ` (first ${config.maxLimit.toLocaleString()} per key: zoom in or aggregate for more)` : "") +
      (count ? "" : " — no data in this range"));
  }

  // Zoom: Plotly reports the new x range in local time; re-query it (debounced) so the answer is finer.
  function onRelayout(event) {
    const zoom = zoomOf(event);
    if (!zoom) return;
    state.start = zoom.reset ? picked.start : zoom.start;
    state.end = zoom.reset ? picked.end : zoom.end;
    state.range = zoom.reset ? picked.range : "custom";
    showRangeInputs();
    clearTimeout(zoomTimer);
    zoomTimer = setTimeout(load, ZOOM_DEBOUNCE_MS);
  }

  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", (event) => {
    if (event.target.name === "start_local" || event.target.name === "end_local") {
      form.querySelector("input[name=range][value=custom]").checked = true;
    }
    if (readForm()) {
      showRangeInputs();
      load();
    }
  });

  document.getElementById("history-tz").textContent =
    Intl.DateTimeFormat().resolvedOptions().timeZone || `UTC${-new Date().getTimezoneOffset() / 60}`;
  showRangeInputs();
  Plotly.newPlot(chart, [], {height: 320}, HubCharts.config()).then(() => {
    chart.on("plotly_relayout", onRelayout);
    load();
  });
})();
