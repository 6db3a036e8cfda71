// The console's only script: draws the charts with Plotly and keeps the loop page live (Server-Sent Events).
"use strict";

function drawCharts() {
  document.querySelectorAll(".chart").forEach(function (element) {
    var figure = JSON.parse(document.getElementById(element.dataset.figure).textContent);
    Plotly.newPlot(element, figure.data, figure.layout, {displayModeBar: false, responsive: true})
      .then(function () { element.dataset.rendered = "true"; });
  });
}

function cell(row, text, href) {
  var td = row.insertCell();
  if (href) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  return td;
}

function replaceRows(table, rows) {
  var body = table.tBodies[0];
  while (body.rows.length) { body.deleteRow(0); }
  rows.forEach(function (values) {
    var row = body.insertRow();
    values.forEach(function (value) {
      if (value && value.badge !== undefined) {
        var span = document.createElement("span");
        span.className = "badge " + (value.ok ? "promoted" : "rejected");
        span.textContent = value.badge;
        row.insertCell().appendChild(span);
      } else {
        cell(row, String(value));
      }
    });
  });
}

function followLoop(table) {
  var state = document.getElementById("live-state");
  var source = new EventSource("/loop/events?after=" + table.dataset.after);
  source.onopen = function () { state.textContent = "live"; };
  source.onerror = function () { state.textContent = "reconnecting…"; };
  source.addEventListener("event", function (message) {
    var e = JSON.parse(message.data);
    var row = table.tBodies[0].insertRow(0);
    row.dataset.seq = e.seq;
    row.className = e.type.replace(".", "-") + " arrived";
    cell(row, e.time);
    cell(row, e.type);
    cell(row, e.text, e.link);
    while (table.tBodies[0].rows.length > 200) { table.tBodies[0].deleteRow(-1); }
  });
  source.addEventListener("status", function (message) {
    var s = JSON.parse(message.data);
    document.getElementById("measured").textContent = s.measured ? s.measured.substring(11, 19) : "not yet";
    replaceRows(document.getElementById("components"), s.components.map(function (c) {
      return [c.name, {badge: c.healthy ? "ok" : "down", ok: c.healthy}, c.detail];
    }));
    replaceRows(document.getElementById("lags"), s.lags.map(function (l) {
      return [l.service, l.topic, l.lag.toLocaleString("en")];
    }));
  });
}

document.addEventListener("DOMContentLoaded", function () {
  if (window.Plotly) { drawCharts(); }
  var events = document.getElementById("live-events");
  if (events && window.EventSource) { followLoop(events); }
});
