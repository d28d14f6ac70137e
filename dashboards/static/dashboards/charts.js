// What every chart page shares (history, device, compare): local-time conversions for Plotly's date axes and
// the colours of the system's light or dark theme (read from hub.css's custom properties).
(function () {
  "use strict";
  const pad = (n, width) => String(n).padStart(width || 2, "0");

  // "YYYY-MM-DD[ T]HH:MM[:SS[.fff]]" read as local wall-clock time -> UTC ms (null if malformed).
  // Plotly reports date-axis ranges in this form, in the same local time it draws Date objects in.
  function fromLocal(text) {
    const m = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?)?$/.exec(String(text).trim());
    if (!m) return null;
    const ms = m[7] ? Math.round(Number(`0.${m[7]}`) * 1000) : 0;
    const d = new Date(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0), ms);
    return Number.isNaN(d.getTime()) ? null : d.getTime();
  }

  function fromPlotly(value) {
    if (typeof value === "number") { // Plotly's internal ms: UTC fields hold the local wall clock
      const d = new Date(value);
      return new Date(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours(),
        d.getUTCMinutes(), d.getUTCSeconds(), d.getUTCMilliseconds()).getTime();
    }
    return fromLocal(value);
  }

  function toPlotly(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  // "YYYY-MM-DDTHH:MM:SS" in local time, for <input type="datetime-local">.
  function toLocalInput(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
      `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // The x range Plotly reports after a zoom (UTC ms), {reset: true} after a double-click, null otherwise.
  function zoomOf(event) {
    if (event["xaxis.autorange"]) return {reset: true};
    let range = null;
    if ("xaxis.range[0]" in event) range = [event["xaxis.range[0]"], event["xaxis.range[1]"]];
    else if (Array.isArray(event["xaxis.range"])) range = event["xaxis.range"];
    if (!range) return null; // y-only zoom, legend clicks, resizes
    const start = fromPlotly(range[0]);
    const end = fromPlotly(range[1]);
    return start === null || end === null || start >= end ? null : {start: Math.floor(start), end: Math.ceil(end)};
  }

  function themed(layout) {
    const css = getComputedStyle(document.documentElement);
    const colour = (name) => css.getPropertyValue(name).trim();
    const grid = colour("--chart-grid");
    layout.paper_bgcolor = "rgba(0,0,0,0)";
    layout.plot_bgcolor = "rgba(0,0,0,0)";
    layout.font = Object.assign({color: colour("--fg")}, layout.font);
    // Vertical on the right: the toolbar never covers a chart's title, on a phone either.
    layout.modebar = Object.assign({orientation: "v", bgcolor: "rgba(0,0,0,0)", color: colour("--muted"),
                                    activecolor: colour("--accent")}, layout.modebar);
    layout.yaxis = layout.yaxis || {}; // both axes themed, in dark mode too
    for (const axis of Object.keys(layout).filter((k) => /^[xy]axis\d*$/.test(k))) {
      layout[axis] = Object.assign({gridcolor: grid, zerolinecolor: grid}, layout[axis]);
    }
    return layout;
  }

  // "5 min", "1 s", "200 ms".
  function formatInterval(ms) {
    for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["min", 60000], ["s", 1000]]) {
      if (ms % size === 0) return `${ms / size} ${unit}`;
    }
    return `${ms} ms`;
  }

  // Plotly's toolbar for this product: zoom in, zoom out and back to the whole range; nothing that uploads or
  // exports data anywhere (no "Share chart…", no Chart Studio link).
  const CONFIG = {responsive: true, displaylogo: false, displayModeBar: true, showSendToCloud: false,
                  showEditInChartStudio: false, showLink: false,
                  modeBarButtons: [["zoomIn2d", "zoomOut2d", "autoScale2d"]]};

  function config() { return Object.assign({}, CONFIG); }

  // The toolbar's buttons are links without an href: give them a place in the Tab order and Enter/Space.
  function keyboardToolbar(div) {
    for (const button of div.querySelectorAll(".modebar-btn:not([tabindex])")) {
      button.setAttribute("tabindex", "0");
      button.setAttribute("role", "button");
      button.addEventListener("keydown", (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        button.dispatchEvent(new MouseEvent("click", {bubbles: true}));
      });
    }
  }

  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  window.HubCharts = {fromLocal, fromPlotly, toPlotly, toLocalInput, zoomOf, themed, formatInterval, COLORS, config,
                      keyboardToolbar};
})();
