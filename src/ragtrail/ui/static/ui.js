// ragtrail ui: the trace waterfall, span selection without a reload, and live mode on the trace list.
// No dependencies; pages work without this script (links do a full page load).
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";

  function placeBar(row, b, total) {
    var bar = row.lastChild;
    var left = Math.max(0, Math.min(100, (b[1] / total) * 100));
    var width = Math.max(0.15, Math.min(100 - left, (b[2] / total) * 100));
    bar.style.marginLeft = left.toFixed(3) + "%";
    bar.style.width = width.toFixed(3) + "%";
    row.title = b[2].toFixed(2) + " ms, starting at +" + b[1].toFixed(2) + " ms";
  }

  function drawWaterfall() {
    var holder = document.getElementById("trace-data");
    var wf = document.getElementById("waterfall");
    if (!holder || !wf) return;
    var data = JSON.parse(holder.textContent);
    var total = data.duration_ms > 0 ? data.duration_ms : 1;
    var barOf = {};
    for (var j = 0; j < data.bars.length; j++) barOf[data.bars[j][0]] = data.bars[j];
    var rows = wf.querySelectorAll(".wf-row");
    for (var i = 0; i < rows.length; i++) {
      var b = barOf[rows[i].id.slice(4)];
      if (b) placeBar(rows[i], b, total);
    }
    wf.classList.add("drawn");
    requestAnimationFrame(function () {
      window.ragtrailWaterfallPainted = performance.now();
    });
    appendRest(wf, data, barOf, total);
  }

  // Rows beyond the first ones come as data: appended in chunks after the first paint, built with
  // textContent (stored names never become markup).
  function appendRest(wf, data, barOf, total) {
    var rest = data.rest || [];
    var more = document.getElementById("more-rows");
    var k = 0;
    function done() {
      if (more) more.parentNode.removeChild(more);
      wf.classList.add("complete");
      window.ragtrailWaterfallComplete = performance.now();
    }
    function chunk() {
      var frag = document.createDocumentFragment();
      for (var n = 0; n < 1000 && k < rest.length; n++, k++) {
        var r = rest[k];
        var a = document.createElement("a");
        a.className = "wf-row w-" + r[2] + (r[4] ? " err" : "") + (r[0] === data.selected ? " sel" : "");
        a.id = "row-" + r[0];
        a.href = "?span=" + encodeURIComponent(r[0]);
        var name = document.createElement("span");
        name.className = "wf-name d" + r[3];
        name.textContent = r[1];
        a.appendChild(name);
        var bar = document.createElement("span");
        bar.className = "bar";
        a.appendChild(bar);
        if (barOf[r[0]]) placeBar(a, barOf[r[0]], total);
        frag.appendChild(a);
      }
      wf.insertBefore(frag, more);
      if (k < rest.length) requestAnimationFrame(chunk);
      else done();
    }
    if (rest.length) requestAnimationFrame(function () { requestAnimationFrame(chunk); });
    else done();
  }

  function selectSpans() {
    var wf = document.getElementById("waterfall");
    var panel = document.getElementById("span-panel");
    var holder = document.getElementById("trace-data");
    if (!wf || !panel || !holder) return;
    var traceId = JSON.parse(holder.textContent).trace_id;
    wf.addEventListener("click", function (ev) {
      var row = ev.target.closest ? ev.target.closest(".wf-row") : null;
      if (!row || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      var sid = row.id.slice(4);
      var url = base + "/traces/" + encodeURIComponent(traceId) + "/spans/" + encodeURIComponent(sid);
      fetch(url, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      }).then(function (html) {
        panel.innerHTML = html; // server-rendered, escaped fragment from this origin
        var sel = wf.querySelectorAll(".wf-row.sel");
        for (var i = 0; i < sel.length; i++) sel[i].classList.remove("sel");
        row.classList.add("sel");
        var u = new URL(window.location.href);
        u.searchParams.set("span", sid);
        u.hash = "";
        history.replaceState(null, "", u.toString());
      }).catch(function () {
        window.location.href = row.getAttribute("href");
      });
    });
  }

  function liveMode() {
    var box = document.getElementById("live");
    var table = document.getElementById("traces");
    if (!box || !table) return;
    var timer = null;
    function first() {
      var row = table.querySelector("tbody tr[data-trace]");
      return row ? row.getAttribute("data-trace") : null;
    }
    function poll() {
      var u = new URL(window.location.href);
      if (u.searchParams.get("after")) return;
      u.searchParams.delete("live");
      fetch(base + "/api/traces" + u.search, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (data) {
        if (!data) return;
        var newest = data.traces.length ? data.traces[0].trace_id : null;
        if (newest !== first()) window.location.reload();
      }).catch(function () {});
    }
    function sync() {
      var u = new URL(window.location.href);
      if (box.checked) {
        u.searchParams.set("live", "1");
        if (!timer) timer = setInterval(poll, 2000);
      } else {
        u.searchParams.delete("live");
        if (timer) clearInterval(timer);
        timer = null;
      }
      history.replaceState(null, "", u.toString());
    }
    box.addEventListener("change", sync);
    if (box.checked) sync();
  }

  drawWaterfall();
  selectSpans();
  liveMode();
})();
