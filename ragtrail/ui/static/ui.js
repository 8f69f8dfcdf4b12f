// ragtrail ui: the trace waterfall, span selection without a reload, and live mode on the trace list.
// No dependencies; pages work without this script (links do a full page load).
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";

  function drawWaterfall() {
    var holder = document.getElementById("trace-data");
    var wf = document.getElementById("waterfall");
    if (!holder || !wf) return;
    var data = JSON.parse(holder.textContent);
    var total = data.duration_ms > 0 ? data.duration_ms : 1;
    var rows = wf.querySelectorAll(".wf-row");
    var byId = {};
    for (var i = 0; i < rows.length; i++) byId[rows[i].id.slice(4)] = rows[i];
    for (var j = 0; j < data.bars.length; j++) {
      var b = data.bars[j];
      var row = byId[b[0]];
      if (!row) continue;
      var bar = row.lastChild;
      var left = Math.max(0, Math.min(100, (b[1] / total) * 100));
      var width = Math.max(0.15, Math.min(100 - left, (b[2] / total) * 100));
      bar.style.marginLeft = left.toFixed(3) + "%";
      bar.style.width = width.toFixed(3) + "%";
      row.title = b[2].toFixed(2) + " ms, starting at +" + b[1].toFixed(2) + " ms";
    }
    wf.classList.add("drawn");
    requestAnimationFrame(function () {
      window.ragtrailWaterfallPainted = performance.now();
    });
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
