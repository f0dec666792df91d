"use strict";
(function () {
  var table = JSON.parse(document.getElementById("fanout-data").textContent);
  var col = {};
  table.columns.forEach(function (name, i) { col[name] = i; });
  var rows = table.rows;
  var PAGE = 100;
  var view = { matched: rows, page: 0, sortBy: null, descending: false };
  var byId = function (id) { return document.getElementById(id); };

  function value(row, name) {
    var v = row[col[name]];
    if (v === null || v === undefined) { return null; }
    if (table.dicts[name]) { return table.dicts[name][v]; }
    return v;
  }
  function invokeId(row) {
    var b = row[col.batch];
    return b === null ? null : table.invoke_ids[b];
  }
  function text(v) { return v === null || v === undefined ? "" : String(v); }

  function option(select, label, v) {
    var o = document.createElement("option");
    o.value = v;
    o.textContent = label;
    select.appendChild(o);
  }
  function fillSelect(id, values) {
    var select = byId(id);
    values.forEach(function (pair) { option(select, pair[0], pair[1]); });
  }
  function dictOptions(name) {
    return table.dicts[name].map(function (v, i) { return [v, String(i)]; })
      .sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0; });
  }
  fillSelect("f-state", table.dicts.state.map(function (v, i) { return [v, String(i)]; }));
  fillSelect("f-region", dictOptions("region"));
  fillSelect("f-error", dictOptions("error_code"));
  var waves = {};
  rows.forEach(function (r) { if (r[col.wave] !== null) { waves[r[col.wave]] = true; } });
  fillSelect("f-wave", Object.keys(waves).map(Number).sort(function (a, b) { return a - b; })
    .map(function (w) { return ["wave " + w, String(w)]; }));
  var groups = {};
  rows.forEach(function (r) { if (r[col.group] !== null) { groups[r[col.group]] = true; } });
  fillSelect("f-group", Object.keys(groups).map(Number).sort(function (a, b) { return a - b; })
    .map(function (g) { return ["failure group " + (g + 1), String(g)]; }));

  function filters() {
    return {
      state: byId("f-state").value, region: byId("f-region").value,
      wave: byId("f-wave").value, error: byId("f-error").value,
      group: byId("f-group").value, text: byId("f-text").value.trim().toLowerCase()
    };
  }
  function matches(row, f) {
    if (f.state !== "" && String(row[col.state]) !== f.state) { return false; }
    if (f.region !== "" && String(row[col.region]) !== f.region) { return false; }
    if (f.wave !== "" && String(row[col.wave]) !== f.wave) { return false; }
    if (f.error !== "" && String(row[col.error_code]) !== f.error) { return false; }
    if (f.group !== "" && String(row[col.group]) !== f.group) { return false; }
    if (f.text !== "") {
      var hay = [row[col.instance_id], value(row, "region"), value(row, "reason"),
        value(row, "error_code"), row[col.output], value(row, "batch"), invokeId(row)];
      for (var i = 0; i < hay.length; i++) {
        if (hay[i] !== null && String(hay[i]).toLowerCase().indexOf(f.text) >= 0) { return true; }
      }
      return false;
    }
    return true;
  }
  function sortKey(row, name) {
    if (name === "invoke_id") { return text(invokeId(row)); }
    var v = value(row, name);
    if (name === "wave" || name === "exit_code" || name === "group") {
      return v === null ? -Infinity : v;
    }
    return text(v);
  }
  function apply() {
    var f = filters();
    var matched = [];
    for (var i = 0; i < rows.length; i++) { if (matches(rows[i], f)) { matched.push(rows[i]); } }
    if (view.sortBy !== null) {
      var name = view.sortBy, sign = view.descending ? -1 : 1;
      var keyed = matched.map(function (r, i) { return [sortKey(r, name), i, r]; });
      keyed.sort(function (a, b) {
        if (a[0] < b[0]) { return -sign; }
        if (a[0] > b[0]) { return sign; }
        return a[1] - b[1];
      });
      matched = keyed.map(function (k) { return k[2]; });
    }
    view.matched = matched;
    view.page = 0;
    draw();
  }
  var SHOWN = ["instance_id", "region", "state", "wave", "exit_code", "error_code", "reason",
    "output", "run", "batch", "invoke_id"];
  function cell(tr, content, cls) {
    var td = document.createElement("td");
    td.textContent = content;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  }
  function draw() {
    var body = byId("instances-body");
    var pages = Math.max(1, Math.ceil(view.matched.length / PAGE));
    view.page = Math.min(Math.max(view.page, 0), pages - 1);
    var start = view.page * PAGE;
    var fragment = document.createDocumentFragment();
    view.matched.slice(start, start + PAGE).forEach(function (row) {
      var tr = document.createElement("tr");
      SHOWN.forEach(function (name) {
        var v = name === "invoke_id" ? invokeId(row) : value(row, name);
        var td = cell(tr, text(v), name === "state" ? "s-" + text(v) : "c-" + name);
        if (name === "output" && v) { td.title = v; }
      });
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    byId("match-count").textContent = String(view.matched.length);
    byId("page-info").textContent = "page " + (view.page + 1) + " of " + pages;
    byId("prev-page").disabled = view.page === 0;
    byId("next-page").disabled = view.page >= pages - 1;
  }
  ["f-state", "f-region", "f-wave", "f-error", "f-group"].forEach(function (id) {
    byId(id).addEventListener("change", apply);
  });
  var typing = null;
  byId("f-text").addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(apply, 150);
  });
  byId("f-clear").addEventListener("click", function () {
    ["f-state", "f-region", "f-wave", "f-error", "f-group", "f-text"].forEach(function (id) {
      byId(id).value = "";
    });
    apply();
  });
  byId("prev-page").addEventListener("click", function () { view.page -= 1; draw(); });
  byId("next-page").addEventListener("click", function () { view.page += 1; draw(); });
  Array.prototype.forEach.call(document.querySelectorAll("#instances th[data-sort]"),
    function (th) {
      th.addEventListener("click", function () {
        var name = th.getAttribute("data-sort");
        view.descending = view.sortBy === name ? !view.descending : false;
        view.sortBy = name;
        Array.prototype.forEach.call(document.querySelectorAll("#instances th"), function (h) {
          h.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", view.descending ? "descending" : "ascending");
        apply();
      });
    });
  Array.prototype.forEach.call(document.querySelectorAll("button[data-group]"), function (b) {
    b.addEventListener("click", function () {
      byId("f-group").value = b.getAttribute("data-group");
      apply();
      byId("instances-section").scrollIntoView();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("[data-filter-state]"), function (a) {
    a.addEventListener("click", function (event) {
      event.preventDefault();
      var wanted = a.getAttribute("data-filter-state");
      byId("f-state").value = String(table.dicts.state.indexOf(wanted));
      apply();
      byId("instances-section").scrollIntoView();
    });
  });
  apply();
  document.body.setAttribute("data-ready", "true");
})();
