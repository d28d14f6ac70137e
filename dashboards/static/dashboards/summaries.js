// What a chart shows, in words, for a screen reader (issue 25, WCAG 1.1.1): next to each chart of the device,
// compare and history pages, a visually hidden summary — the range shown, each line's latest value, lowest and
// highest, the alert thresholds drawn — and a link to the chart's data as CSV (shown when it has the keyboard's
// focus). The charts are drawn by live.js and history.js; this file only watches them: it finds each chart div
// (a MutationObserver on #charts for the live pages' charts, made as keys arrive) and rewrites its summary after
// Plotly's `plotly_afterplot`, at most once a second. A summary is not a live region: it is read when reached,
// never announced as the window moves.
(function () {
  "use strict";
  const EVERY_MS = 1000;
  const DAY_MS = 86400000;
  const number = new Intl.NumberFormat(undefined, {maximumFractionDigits: 3});
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const pageData = document.getElementById("device-page");
  const thresholds = pageData ? JSON.parse(pageData.textContent).thresholds : []; // [{key, value, severity, rule}]
  const summaries = new WeakMap(); // chart div -> {box, text, links, timer}
  let made = 0;

  function ms(x) {
    return x instanceof Date ? x.getTime() : HubCharts.fromPlotly(x); // charts.js
  }

  function when(at, span) {
    const d = new Date(at);
    return span < DAY_MS ? d.toLocaleTimeString() : d.toLocaleString();
  }

  // One line's latest value, lowest and highest within [start, end].
  function described(trace, start, end, span) {
    const xs = trace.x || [];
    const ys = trace.y || [];
    let low = Infinity;
    let high = -Infinity;
    let last = -1;
    let count = 0;
    for (let i = 0; i < ys.length; i++) {
      const y = ys[i];
      if (typeof y !== "number" || xs[i] === null) continue; // a gap in the line
      const t = ms(xs[i]);
      if (t < start || t > end) continue;
      count++;
      if (y < low) low = y;
      if (y > high) high = y;
      last = i;
    }
    if (!count) return "no readings";
    return `latest ${number.format(ys[last])} at ${when(ms(xs[last]), span)}, lowest ${number.format(low)}, ` +
      `highest ${number.format(high)} (${count.toLocaleString()} points)`;
  }

  function thresholdsOf(div) {
    const key = div.dataset.key;
    const named = thresholds.filter((t) => t.key === key);
    if (named.length) {
      return named.map((t) => `${number.format(t.value)} (${t.severity}, ${t.rule})`).join("; ");
    }
    const lines = ((div.layout && div.layout.shapes) || []).filter((s) => s.type === "line" && s.y0 === s.y1);
    return lines.map((s) => number.format(s.y0)).join("; ");
  }

  function text(div) {
    const layout = div.layout || {};
    const title = (layout.title && layout.title.text) || div.getAttribute("aria-label");
    const range = ((layout.xaxis && layout.xaxis.range) || []).map(ms);
    const lines = (div.data || []).filter((t) => !t.fill && t.hoverinfo !== "skip"); // not the min-max bands
    if (!lines.length || range.length !== 2 || range.some((t) => t === null)) return `${title}: nothing drawn yet.`;
    const [start, end] = range;
    const span = end - start;
    const parts = lines.map((t) => (lines.length > 1 || !div.dataset.key ? `${t.name}: ` : "") +
      described(t, start, end, span));
    const limits = thresholdsOf(div);
    return `${title}, from ${when(start, span)} to ${when(end, span)} (${ZONE}): ` + parts.join("; ") + "." +
      (limits ? ` Alert thresholds: ${limits}.` : "");
  }

  // The page's CSV links for what is shown, narrowed to this chart's key where they carry several.
  function csvLinks(div) {
    const key = div.dataset.key;
    const found = [];
    for (const source of document.querySelectorAll("#window-csv, #history-csv, #compare-devices a.csv")) {
      if (source.hidden || !source.href || source.getAttribute("href") === "#") continue;
      const url = new URL(source.href);
      if (key) url.searchParams.set("keys", key);
      const item = source.closest("[data-device]");
      const whose = item ? `${item.querySelector("a").textContent}: ` : "";
      found.push({href: url.toString(), text: `${whose}${key ? `${key}, the range shown` : "the data shown"} as CSV`});
    }
    return found;
  }

  function summarise(div) {
    const s = summaries.get(div);
    s.timer = 0;
    if (!div.isConnected) { s.box.remove(); return; }
    // The drawing itself says nothing a screen reader can use (tick labels run together): the summary does.
    for (const svg of div.querySelectorAll("svg.main-svg:not([aria-hidden])")) svg.setAttribute("aria-hidden", "true");
    const words = text(div);
    if (s.text.textContent !== words) s.text.textContent = words;
    s.drawn = s.drawn || (div.data || []).length > 0;
    const links = csvLinks(div);
    if (links.length !== s.links.children.length) {
      s.links.replaceChildren(...links.map(() => document.createElement("li")).map((li) => {
        li.append(document.createElement("a"));
        return li;
      }));
    }
    links.forEach((link, i) => {
      const a = s.links.children[i].firstChild;
      if (a.getAttribute("href") !== link.href) a.setAttribute("href", link.href);
      if (a.textContent !== link.text) a.textContent = link.text;
    });
  }

  // The first lines drawn are described at once; after that, at most once a second (the live charts redraw often).
  function later(div) {
    const s = summaries.get(div);
    if (!s.timer) s.timer = setTimeout(() => summarise(div), s.drawn ? EVERY_MS : 0);
  }

  function watch(div) {
    if (summaries.has(div)) return;
    if (typeof div.on !== "function") { // Plotly has not taken it yet: it gives the div `on` as it starts drawing
      const waiting = new MutationObserver(() => {
        if (typeof div.on === "function") { waiting.disconnect(); watch(div); }
      });
      waiting.observe(div, {childList: true});
      return;
    }
    const box = document.createElement("div");
    box.className = "chart-summary";
    box.id = `chart-summary-${++made}`;
    const words = document.createElement("p");
    const links = document.createElement("ul");
    box.append(words, links);
    div.after(box);
    div.setAttribute("role", "figure");
    div.setAttribute("aria-label", `Chart of ${div.dataset.key || "the history"}`);
    div.setAttribute("aria-describedby", box.id);
    summaries.set(div, {box: box, text: words, links: links, timer: 0, drawn: false});
    div.on("plotly_afterplot", () => later(div));
    summarise(div);
  }

  for (const div of document.querySelectorAll(".chart, #history-chart")) watch(div);
  for (const container of document.querySelectorAll("#charts")) {
    new MutationObserver(() => {
      for (const div of container.querySelectorAll(":scope > .chart")) watch(div);
    }).observe(container, {childList: true});
  }
})();
