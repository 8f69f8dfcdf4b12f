/* ragtrail report: renders the embedded JSON into tables and inline-SVG charts. No network access. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("ragtrail-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var app = document.getElementById("app");
  var rendered = 0, failures = [];

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function s(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (parent) parent.appendChild(e);
    return e;
  }
  function num(v, d, signed) {
    if (v === null || v === undefined || isNaN(v)) return "—";
    var t = Number(v).toFixed(d === undefined ? 4 : d);
    return signed && v > 0 ? "+" + t : t;
  }
  function pval(v) { return v === null || v === undefined ? "—" : (v < 1e-4 ? "<0.0001" : Number(v).toFixed(4)); }
  function anchorId(prefix, id) { return prefix + "-" + String(id).replace(/[^A-Za-z0-9_.:-]/g, "_"); }
  function niceRange(lo, hi) {
    if (!(isFinite(lo) && isFinite(hi))) { lo = -1; hi = 1; }
    if (lo === hi) { lo -= 0.5; hi += 0.5; }
    var pad = (hi - lo) * 0.08; return [lo - pad, hi + pad];
  }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var out = [], t = Math.ceil(lo / step) * step;
    for (; t <= hi + 1e-12; t += step) out.push(Math.abs(t) < step / 1e6 ? 0 : t);
    return out;
  }
  function chart(container, kind, draw) {
    var box = el("div", { cls: "chart", "data-chart": kind });
    container.appendChild(box);
    try {
      draw(box);
      box.setAttribute("data-rendered", "1");
      rendered += 1;
    } catch (err) {
      box.setAttribute("data-error", String(err));
      box.appendChild(el("p", { cls: "err", text: "chart failed: " + err }));
      failures.push(kind + ": " + err);
    }
  }
  function sortableTable(headers, rows, opts) {
    // headers: [{label, key, num, left}], rows: array of objects with the keys + _tr(tr) hook
    var table = el("table", { cls: (opts && opts.cls) || "" });
    var thead = el("thead"), tr = el("tr"); thead.appendChild(tr); table.appendChild(thead);
    var tbody = el("tbody"); table.appendChild(tbody);
    var state = { key: null, dir: 1 };
    headers.forEach(function (h) {
      var th = el("th", { cls: (h.left ? "l " : "") + "sortable", text: h.label, title: "sort" });
      th.addEventListener("click", function () {
        state.dir = state.key === h.key ? -state.dir : 1; state.key = h.key;
        rows.sort(function (x, y) {
          var a = x[h.key], b = y[h.key];
          if (a === null || a === undefined) return 1; if (b === null || b === undefined) return -1;
          return (h.num ? a - b : String(a).localeCompare(String(b))) * state.dir;
        });
        fill();
      });
      tr.appendChild(th);
    });
    function fill() {
      tbody.textContent = "";
      rows.forEach(function (r) {
        var row = el("tr", { cls: r._cls || "" });
        headers.forEach(function (h) {
          var td = el("td", { cls: h.left ? "l" : "" });
          if (h.render) { var c = h.render(r); if (typeof c === "string") td.textContent = c; else if (c) td.appendChild(c); }
          else td.textContent = r[h.key] === null || r[h.key] === undefined ? "—" : String(r[h.key]);
          row.appendChild(td);
        });
        if (r._hidden) row.style.display = "none";
        tbody.appendChild(row);
      });
    }
    fill();
    table.refill = fill;
    return table;
  }
  function section(id, title) {
    var sec = el("section", { id: id }); sec.appendChild(el("h2", { text: title }));
    app.appendChild(sec);
    document.getElementById("toc").appendChild(el("a", { href: "#" + id, text: title }));
    return sec;
  }

  // ------------------------------------------------------------------ charts
  function forest(box, cmp) {
    var ms = cmp.metrics.filter(function (m) { return !m.operational && m.delta !== null; });
    if (!ms.length) { box.appendChild(el("p", { cls: "muted", text: "no quality metric to plot" })); return; }
    var W = 760, rowH = 28, left = 190, right = 30, top = 26, H = top + ms.length * rowH + 36;
    var lo = 0, hi = 0;
    ms.forEach(function (m) { lo = Math.min(lo, m.ci_low === null ? m.delta : m.ci_low); hi = Math.max(hi, m.ci_high === null ? m.delta : m.ci_high); });
    var r = niceRange(lo, hi), x = function (v) { return left + (v - r[0]) / (r[1] - r[0]) * (W - left - right); };
    var svg = s("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "deltas with confidence intervals", "class": "forest" });
    s("text", { x: left, y: 14, "font-size": 12, fill: "#667085", text: "delta (" + cmp.b + " − " + cmp.a + ") with " + Math.round(cmp.confidence * 100) + "% paired bootstrap CI" }, svg);
    ticks(r[0], r[1], 6).forEach(function (t) {
      s("line", { x1: x(t), x2: x(t), y1: top - 4, y2: H - 30, stroke: "#eaecf0" }, svg);
      s("text", { x: x(t), y: H - 14, "font-size": 11, "text-anchor": "middle", fill: "#667085", text: num(t, 3, true) }, svg);
    });
    s("line", { x1: x(0), x2: x(0), y1: top - 6, y2: H - 30, stroke: "#98a2b3", "stroke-dasharray": "4 3", "class": "zero" }, svg);
    ms.forEach(function (m, i) {
      var y = top + i * rowH + rowH / 2;
      var color = m.verdict === "better" ? "#1a7f37" : m.verdict === "worse" ? "#c4320a" : "#475467";
      s("text", { x: left - 10, y: y + 4, "font-size": 12, "text-anchor": "end", fill: "#1d2430", text: m.metric }, svg);
      if (m.ci_low !== null && m.ci_high !== null) {
        s("line", { x1: x(m.ci_low), x2: x(m.ci_high), y1: y, y2: y, stroke: color, "stroke-width": 2, "class": "ci" }, svg);
        [m.ci_low, m.ci_high].forEach(function (v) { s("line", { x1: x(v), x2: x(v), y1: y - 5, y2: y + 5, stroke: color, "stroke-width": 2 }, svg); });
      }
      var c = s("circle", { cx: x(m.delta), cy: y, r: 5, fill: color, "class": "delta" }, svg);
      s("title", { text: m.metric + ": " + num(m.delta, 4, true) + " [" + num(m.ci_low, 4, true) + ", " + num(m.ci_high, 4, true) + "], p(Holm) " + pval(m.p_adjusted) }, c);
    });
    box.appendChild(svg);
  }

  function means(box, runs) {
    var names = [];
    runs.forEach(function (r) { r.metrics.forEach(function (m) { if (names.indexOf(m.metric) < 0) names.push(m.metric); }); });
    if (!names.length) { box.appendChild(el("p", { cls: "muted", text: "no metrics" })); return; }
    var palette = ["#5b7cbd", "#e0913a", "#3fa27a", "#b4548f", "#8a6fd1", "#c0a030"];
    var lo = 0, hi = 0;
    runs.forEach(function (r) { r.metrics.forEach(function (m) { if (m.mean !== null) { lo = Math.min(lo, m.ci_low === null ? m.mean : m.ci_low); hi = Math.max(hi, m.ci_high === null ? m.mean : m.ci_high); } }); });
    if (hi <= 1 && lo >= 0) hi = 1;
    var W = Math.max(420, 90 + names.length * (runs.length * 22 + 26)), H = 260, left = 50, bottom = 60, top = 16;
    var y = function (v) { return top + (1 - (v - lo) / (hi - lo || 1)) * (H - top - bottom); };
    var svg = s("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "metric means", "class": "means" });
    ticks(lo, hi, 5).forEach(function (t) {
      s("line", { x1: left, x2: W - 10, y1: y(t), y2: y(t), stroke: "#eaecf0" }, svg);
      s("text", { x: left - 6, y: y(t) + 4, "font-size": 11, "text-anchor": "end", fill: "#667085", text: num(t, 2) }, svg);
    });
    var groupW = runs.length * 22 + 26;
    names.forEach(function (name, gi) {
      var gx = left + 14 + gi * groupW;
      runs.forEach(function (r, ri) {
        var m = r.metrics.filter(function (q) { return q.metric === name; })[0];
        if (!m || m.mean === null) return;
        var bx = gx + ri * 22, y0 = y(Math.max(lo, 0)), ym = y(m.mean);
        var bar = s("rect", { x: bx, y: Math.min(y0, ym), width: 18, height: Math.max(1, Math.abs(y0 - ym)), fill: palette[ri % palette.length], "class": "bar" }, svg);
        s("title", { text: r.ref + " " + name + ": " + num(m.mean) + " (" + m.n_ok + " ok)" }, bar);
        if (m.ci_low !== null) s("line", { x1: bx + 9, x2: bx + 9, y1: y(m.ci_low), y2: y(m.ci_high), stroke: "#1d2430", "stroke-width": 1.5 }, svg);
      });
      s("text", { x: gx + (runs.length * 22) / 2, y: H - bottom + 16, "font-size": 11, "text-anchor": "middle", fill: "#1d2430", text: name.length > 16 ? name.slice(0, 15) + "…" : name }, svg);
    });
    runs.forEach(function (r, ri) {
      s("rect", { x: left + ri * 170, y: H - 22, width: 10, height: 10, fill: palette[ri % palette.length] }, svg);
      s("text", { x: left + ri * 170 + 14, y: H - 13, "font-size": 11, fill: "#1d2430", text: r.ref }, svg);
    });
    box.appendChild(svg);
  }

  function latency(box, runs) {
    var withLat = runs.filter(function (r) { return r.latency && r.latency.length; });
    if (!withLat.length) { box.appendChild(el("p", { cls: "muted", text: "no latency recorded" })); return; }
    var palette = ["#5b7cbd", "#e0913a", "#3fa27a", "#b4548f", "#8a6fd1", "#c0a030"];
    var maxv = 0; withLat.forEach(function (r) { maxv = Math.max(maxv, r.latency[r.latency.length - 1]); });
    var W = 640, H = 260, left = 50, bottom = 44, top = 14, right = 16;
    var x = function (v) { return left + v / (maxv || 1) * (W - left - right); };
    var y = function (p) { return top + (1 - p) * (H - top - bottom); };
    var svg = s("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "latency ECDF", "class": "latency" });
    ticks(0, maxv || 1, 6).forEach(function (t) {
      s("line", { x1: x(t), x2: x(t), y1: top, y2: H - bottom, stroke: "#eaecf0" }, svg);
      s("text", { x: x(t), y: H - bottom + 14, "font-size": 11, "text-anchor": "middle", fill: "#667085", text: num(t, 0) }, svg);
    });
    [0, 0.5, 0.95, 1].forEach(function (p) {
      s("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), stroke: p === 0.95 ? "#fda29b" : "#eaecf0" }, svg);
      s("text", { x: left - 6, y: y(p) + 4, "font-size": 11, "text-anchor": "end", fill: "#667085", text: p === 0.95 ? "p95" : num(p, 1) }, svg);
    });
    withLat.forEach(function (r, ri) {
      var n = r.latency.length, pts = [[x(r.latency[0]), y(0)]];
      r.latency.forEach(function (v, i) { pts.push([x(v), y(i / n)]); pts.push([x(v), y((i + 1) / n)]); });
      s("polyline", { points: pts.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" "), fill: "none", stroke: palette[ri % palette.length], "stroke-width": 2, "class": "ecdf" }, svg);
      s("text", { x: left + ri * 170 + 14, y: H - 8, "font-size": 11, fill: palette[ri % palette.length], text: r.ref + " (p95 " + num(r.latency_p95, 0) + " ms)" }, svg);
    });
    s("text", { x: W - right, y: H - bottom + 28, "font-size": 11, "text-anchor": "end", fill: "#667085", text: "latency (ms)" }, svg);
    box.appendChild(svg);
  }

  function scatter(box, cmp) {
    var names = Object.keys(cmp.scatter || {}).filter(function (k) { return cmp.scatter[k].length; });
    if (!names.length) { box.appendChild(el("p", { cls: "muted", text: "no paired scores" })); return; }
    var select = el("select", { "aria-label": "metric" });
    names.forEach(function (n) { select.appendChild(el("option", { value: n, text: n })); });
    box.appendChild(el("label", {}, ["metric: ", select]));
    var holder = el("div"); box.appendChild(holder);
    function draw(name) {
      holder.textContent = "";
      var pts = cmp.scatter[name], W = 360, H = 360, pad = 40;
      var lo = Infinity, hi = -Infinity;
      pts.forEach(function (p) { lo = Math.min(lo, p[1], p[2]); hi = Math.max(hi, p[1], p[2]); });
      var r = niceRange(lo, hi), sc = function (v) { return pad + (v - r[0]) / (r[1] - r[0]) * (W - 2 * pad); };
      var svg = s("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "per-example scores", "class": "scatter" });
      s("line", { x1: sc(r[0]), y1: H - sc(r[0]), x2: sc(r[1]), y2: H - sc(r[1]), stroke: "#98a2b3", "stroke-dasharray": "4 3" }, svg);
      s("text", { x: W / 2, y: H - 6, "font-size": 11, "text-anchor": "middle", fill: "#667085", text: cmp.a + " →" }, svg);
      s("text", { x: 12, y: H / 2, "font-size": 11, "text-anchor": "middle", fill: "#667085", transform: "rotate(-90 12 " + H / 2 + ")", text: cmp.b + " →" }, svg);
      pts.forEach(function (p) {
        var c = s("circle", { cx: sc(p[1]).toFixed(1), cy: (H - sc(p[2])).toFixed(1), r: 3.5, fill: p[2] > p[1] ? "#1a7f37" : p[2] < p[1] ? "#c4320a" : "#98a2b3", "fill-opacity": 0.6, "class": "pt" }, svg);
        s("title", { text: p[0] + ": " + num(p[1]) + " → " + num(p[2]) }, c);
      });
      holder.appendChild(svg);
    }
    select.addEventListener("change", function () { draw(select.value); });
    draw(names[0]);
  }

  // ------------------------------------------------------------------ trace trees
  function traceTree(tid, spans) {
    var wrap = el("div", { cls: "trace", id: anchorId("trace", tid) });
    var total = 0; spans.forEach(function (sp) { total = Math.max(total, sp.ms || 0); });
    var label = (DATA.trace_labels || {})[tid];
    wrap.appendChild(el("h3", { text: (label ? label + " — " : "") + "trace " + tid + " — " + spans.length + " spans" }));
    var byParent = {}, ids = {};
    spans.forEach(function (sp) { ids[sp.id] = true; });
    spans.forEach(function (sp) { var p = sp.parent && ids[sp.parent] ? sp.parent : "_root"; (byParent[p] = byParent[p] || []).push(sp); });
    function node(sp) {
      var d = el("details", { cls: "span", open: "" });
      var sum = el("summary");
      sum.appendChild(el("span", { cls: "kind " + (sp.kind || ""), text: sp.kind || "SPAN" }));
      sum.appendChild(el("b", { text: sp.name }));
      var meta = " " + num(sp.ms, 1) + " ms";
      if (sp.model) meta += " · " + sp.model;
      if (sp.in_tokens !== null && sp.in_tokens !== undefined) meta += " · " + sp.in_tokens + "→" + (sp.out_tokens || 0) + " tok";
      if (sp.cost !== null && sp.cost !== undefined) meta += " · $" + Number(sp.cost).toFixed(6);
      sum.appendChild(el("span", { cls: "muted", text: meta }));
      if (sp.status === "ERROR") sum.appendChild(el("span", { cls: "status-ERROR", text: " ERROR " + (sp.status_message || "") }));
      d.appendChild(sum);
      if (sp.input) d.appendChild(el("pre", { text: "in: " + sp.input }));
      if (sp.output) d.appendChild(el("pre", { text: "out: " + sp.output }));
      if (sp.docs && sp.docs.length) d.appendChild(el("pre", { text: "docs: " + sp.docs.map(function (x) { return x.id + (x.score !== null && x.score !== undefined ? " (" + num(x.score, 3) + ")" : ""); }).join(", ") }));
      (byParent[sp.id] || []).forEach(function (c) { d.appendChild(node(c)); });
      return d;
    }
    (byParent._root || []).forEach(function (sp) { wrap.appendChild(node(sp)); });
    return wrap;
  }
  function traceLink(tid) {
    if (!tid) return "—";
    if (!DATA.traces[tid]) { var sp = el("span", { cls: "muted", text: tid.slice(0, 12) + "…", title: "trace not in the store" }); return sp; }
    return el("a", { href: "#" + anchorId("trace", tid), text: tid.slice(0, 12) + "…", "class": "trace-link" });
  }

  // ------------------------------------------------------------------ page
  document.getElementById("noscript-note").remove();
  document.getElementById("subtitle").textContent = "generated " + DATA.generated + " by ragtrail " + DATA.version + " from " + DATA.store;

  var sum = section("summary", "Summary");
  var cards = el("div", { cls: "cards" }); sum.appendChild(cards);
  DATA.runs.forEach(function (r) {
    var c = el("div", { cls: "card", id: anchorId("run", r.ref) });
    c.appendChild(el("div", { cls: "big", text: r.ref }));
    c.appendChild(el("div", { cls: "muted", text: r.status + " · " + r.created }));
    c.appendChild(el("div", { text: "dataset " + (r.dataset || "—") + " @ " + (r.dataset_version || "—") }));
    c.appendChild(el("div", { text: r.n_examples + " examples, " + r.n_pipeline_errors + " pipeline errors" }));
    c.appendChild(el("div", { text: "latency p50 " + num(r.latency_p50, 0) + " ms · p95 " + num(r.latency_p95, 0) + " ms" }));
    c.appendChild(el("div", { text: "tokens " + r.input_tokens + " in / " + r.output_tokens + " out · cost " + (r.cost_usd === null ? "unknown" : "$" + Number(r.cost_usd).toFixed(4)) }));
    c.appendChild(el("div", { cls: "muted", text: "config " + JSON.stringify(r.config) }));
    cards.appendChild(c);
  });
  DATA.runs.forEach(function (r) {
    sum.appendChild(el("h3", { text: r.ref + " — metrics (mean over ok scores, 95% interval: Wilson for 0/1 scores, bootstrap percentile otherwise)" }));
    sum.appendChild(sortableTable([
      { label: "metric", key: "metric", left: true }, { label: "mean", key: "mean", num: true, render: function (m) { return num(m.mean); } },
      { label: "95% CI", key: "ci_low", num: true, render: function (m) { return m.ci_low === null ? "—" : "[" + num(m.ci_low) + ", " + num(m.ci_high) + "]"; } },
      { label: "interval", key: "ci_method", left: true, render: function (m) { return m.ci_method || "—"; } },
      { label: "ok", key: "n_ok", num: true }, { label: "undefined", key: "n_undefined", num: true }, { label: "error", key: "n_error", num: true }
    ], r.metrics.slice()));
  });
  chart(sum, "means", function (box) { means(box, DATA.runs); });
  chart(sum, "latency", function (box) { latency(box, DATA.runs); });

  DATA.comparisons.forEach(function (cmp, ci) {
    var sec = section("comparison-" + ci, "Comparison: " + cmp.b + " vs " + cmp.a);
    (cmp.warnings || []).forEach(function (w) { sec.appendChild(el("div", { cls: "warn", text: w })); });
    sec.appendChild(el("p", { cls: "muted", text: "Examples paired by id; delta = " + cmp.b + " − " + cmp.a + "; " + Math.round(cmp.confidence * 100) + "% BCa paired bootstrap CI (" + cmp.n_resamples + " resamples, seed " + cmp.seed + "); paired " + (cmp.test === "t" ? "t-test" : "Wilcoxon signed-rank test") + ", p-values Holm-adjusted across metrics. Significant = adjusted p < 0.05 and the CI excludes 0." }));
    chart(sec, "forest", function (box) { forest(box, cmp); });
    var rows = cmp.metrics.map(function (m) { var o = Object.assign({}, m); o._cls = m.verdict; return o; });
    sec.appendChild(sortableTable([
      { label: "metric", key: "metric", left: true }, { label: cmp.a, key: "mean_a", num: true, render: function (m) { return num(m.mean_a); } },
      { label: cmp.b, key: "mean_b", num: true, render: function (m) { return num(m.mean_b); } },
      { label: "delta", key: "delta", num: true, render: function (m) { return num(m.delta, 4, true); } },
      { label: Math.round(cmp.confidence * 100) + "% CI", key: "ci_low", num: true, render: function (m) { return m.ci_low === null ? "—" : "[" + num(m.ci_low, 4, true) + ", " + num(m.ci_high, 4, true) + "]"; } },
      { label: "p", key: "p_value", num: true, render: function (m) { return pval(m.p_value); } },
      { label: "p (Holm)", key: "p_adjusted", num: true, render: function (m) { return pval(m.p_adjusted); } },
      { label: "pairs", key: "n_pairs", num: true }, { label: "regressed", key: "n_regressed", num: true }, { label: "improved", key: "n_improved", num: true },
      { label: "", key: "verdict", left: true, render: function (m) { var t = el("span", { text: m.verdict }); return t; } }
    ], rows, { cls: "comparison" }));
    Array.prototype.forEach.call(sec.querySelectorAll("table.comparison tbody tr td:last-child"), function (td) { td.className += " verdict"; });
    sec.appendChild(el("h3", { text: "Per-example scores" }));
    chart(sec, "scatter", function (box) { scatter(box, cmp); });
    sec.appendChild(el("h3", { text: "Per-example differences (" + cmp.n_regressions + " regressed, " + cmp.n_improvements + " improved; " + cmp.diffs.length + " shown, worst first)" }));
    var filter = el("input", { cls: "filter", placeholder: "filter by example id or metric", type: "search" });
    sec.appendChild(filter);
    var drows = cmp.diffs.map(function (d) { var o = Object.assign({}, d); o._cls = d.change === "improved" ? "better" : "worse"; return o; });
    var dt = sortableTable([
      { label: "example", key: "example_id", left: true, render: function (d) { return DATA.examples[d.example_id] ? el("a", { href: "#" + anchorId("ex", d.example_id), text: d.example_id }) : d.example_id; } },
      { label: "metric", key: "metric", left: true },
      { label: cmp.a, key: "score_a", num: true, render: function (d) { return d.status_a === "ok" ? num(d.score_a) : d.status_a; } },
      { label: cmp.b, key: "score_b", num: true, render: function (d) { return d.status_b === "ok" ? num(d.score_b) : d.status_b; } },
      { label: "delta", key: "delta", num: true, render: function (d) { return num(d.delta, 4, true); } },
      { label: "reason (b)", key: "reason_b", left: true },
      { label: "trace a", key: "trace_id_a", left: true, render: function (d) { return traceLink(d.trace_id_a); } },
      { label: "trace b", key: "trace_id_b", left: true, render: function (d) { return traceLink(d.trace_id_b); } }
    ], drows, { cls: "diffs" });
    sec.appendChild(dt);
    filter.addEventListener("input", function () {
      var q = filter.value.toLowerCase();
      drows.forEach(function (r) { r._hidden = q && (String(r.example_id) + " " + r.metric).toLowerCase().indexOf(q) < 0; });
      dt.refill();
    });
  });

  var exIds = Object.keys(DATA.examples);
  if (exIds.length) {
    var exs = section("examples", "Examples");
    exIds.sort().forEach(function (id) {
      var ex = DATA.examples[id], box = el("div", { cls: "example", id: anchorId("ex", id) });
      box.appendChild(el("h3", { text: id }));
      if (ex.input) box.appendChild(el("pre", { text: "input: " + ex.input }));
      if (ex.reference) box.appendChild(el("pre", { text: "reference: " + ex.reference }));
      Object.keys(ex.outputs || {}).forEach(function (ref) {
        var o = ex.outputs[ref];
        box.appendChild(el("pre", { text: ref + (o.error ? " error: " + o.error : " output: " + (o.output === null ? "—" : o.output)) }));
      });
      exs.appendChild(box);
    });
  }
  var tids = Object.keys(DATA.traces);
  if (tids.length) {
    var trs = section("traces", "Trace trees");
    tids.forEach(function (tid) { trs.appendChild(traceTree(tid, DATA.traces[tid])); });
  }
  document.body.setAttribute("data-charts-rendered", String(rendered));
  document.body.setAttribute("data-chart-errors", String(failures.length));
  if (location.hash) { var t = document.getElementById(location.hash.slice(1)); if (t) t.scrollIntoView(); }
})();
