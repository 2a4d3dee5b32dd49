// aurora-streams operations page: fleet health and throughput, recent anomalies and a device
// drill-down (readings, 15-minute aggregates, forecast band), from the worker's own /v1 API
// (same tokens) and /metrics. Charts: Plotly, served from the installed plotly package.
"use strict";

const state = { token: sessionStorage.getItem("aurora-token") || "", samples: [], device: null };
const $ = (id) => document.getElementById(id);

function showError(message) { $("error").textContent = message || ""; }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${body.error ? body.error.message : response.status}`);
  return body;
}

function metricSum(text, name) {
  let total = 0, seen = false;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + "{") || line.startsWith(name + " ")) {
      total += Number(line.slice(line.lastIndexOf(" ") + 1)); seen = true;
    }
  }
  return seen ? total : null;
}

async function refreshMetrics() {
  const [ready, metrics] = await Promise.all([fetch("/readyz"), fetch("/metrics").then((r) => r.text())]);
  const readiness = await ready.json().catch(() => ({}));
  $("health").textContent = ready.ok
    ? "ready"
    : readiness.reason
      ? `not ready: ${readiness.reason}`
      : "not ready (recovering or rebalancing)";
  const processed = metricSum(metrics, "aurora_readings_processed_total");
  const dlq = metricSum(metrics, "aurora_dlq_records_total");
  $("dlq").textContent = dlq === null ? "0" : dlq.toLocaleString();
  const now = Date.now() / 1000;
  if (processed !== null) state.samples.push([now, processed]);
  state.samples = state.samples.filter(([t]) => now - t < 600);
  if (state.samples.length >= 2) {
    const rates = [];
    for (let i = 1; i < state.samples.length; i++) {
      const [t0, v0] = state.samples[i - 1], [t1, v1] = state.samples[i];
      rates.push([new Date(t1 * 1000), Math.max(0, (v1 - v0) / (t1 - t0))]);
    }
    $("throughput").textContent = Math.round(rates[rates.length - 1][1]).toLocaleString();
    Plotly.react("throughput-chart", [{ x: rates.map((r) => r[0]), y: rates.map((r) => r[1]), type: "scatter", mode: "lines", name: "readings/s" }],
      { margin: { t: 10, r: 10, b: 30, l: 50 }, yaxis: { title: "readings/s", rangemode: "tozero" } }, { displayModeBar: false, responsive: true });
  }
}

async function refreshFleet() {
  const fleet = await api("/v1/fleet");
  $("devices").textContent = (fleet.devices ?? 0).toLocaleString();
  $("channels").textContent = (fleet.channels ?? 0).toLocaleString();
  $("latest").textContent = fleet.latest_reading || "none yet";
  const anomalies = await api("/v1/anomalies?limit=20");
  const rows = anomalies.items.map((a) => `<tr><td>${a.ts_end}</td><td><a href="#" data-device="${a.device_id}">${a.device_id}</a></td>` +
    `<td>${a.type}${a.cleared ? " (cleared)" : ""}</td><td>${Number(a.score).toFixed(2)}</td><td>${a.detail}</td></tr>`);
  $("anomalies").innerHTML = rows.join("") || "<tr><td colspan=5>none</td></tr>";
  if (!state.device) {
    const devices = await api("/v1/devices?limit=1");
    if (devices.items.length) { $("device").value = devices.items[0].device_id; await showDevice(); }
  }
}

async function showDevice() {
  const device = $("device").value.trim(), channel = $("channel").value;
  if (!device) return;
  state.device = device;
  const id = encodeURIComponent(device), ch = encodeURIComponent(channel);
  const [readings, aggregates, forecast] = await Promise.all([
    api(`/v1/devices/${id}/readings?channel=${ch}`),
    api(`/v1/devices/${id}/aggregates?size=15m&channel=${ch}`),
    api(`/v1/devices/${id}/forecast?channel=${ch}&horizon=48`).catch(() => null),
  ]);
  const traces = [
    { x: aggregates.items.map((b) => b.start), y: aggregates.items.map((b) => b.sum), type: "bar", name: "15-minute energy", marker: { color: "#9fb7e0" } },
    { x: readings.items.map((r) => r.ts_end), y: readings.items.map((r) => r.delta), type: "scatter", mode: "markers", name: "readings (delta)", marker: { color: "#1d2330", size: 5 } },
  ];
  let note = `${readings.items.length} readings, ${aggregates.items.length} windows (${aggregates.unit})`;
  if (forecast && forecast.points && forecast.points.length) {
    const x = forecast.points.map((p) => p.ts_end);
    traces.push({ x, y: forecast.points.map((p) => p.upper), type: "scatter", mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" });
    traces.push({ x, y: forecast.points.map((p) => p.lower), type: "scatter", mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(230,140,40,0.25)", name: "90% band" });
    traces.push({ x, y: forecast.points.map((p) => p.value), type: "scatter", mode: "lines", line: { color: "#d97a1e" }, name: `forecast (${forecast.window_minutes} min)` });
    note += `; forecast by ${forecast.member}, day-ahead MAE ratio ${forecast.accuracy.mae_ratio == null ? "n/a" : forecast.accuracy.mae_ratio.toFixed(2)}`;
  } else if (forecast) {
    note += `; forecast: ${forecast.note || forecast.status}`;
  }
  $("device-note").textContent = note;
  await Plotly.react("device-chart", traces, { margin: { t: 10, r: 10, b: 40, l: 50 }, barmode: "overlay", yaxis: { title: aggregates.unit }, legend: { orientation: "h" } },
    { displayModeBar: false, responsive: true });
  document.body.dataset.chart = "rendered";
}

async function tick() {
  try {
    await refreshMetrics();
    if (state.token) { await refreshFleet(); showError(""); } else { showError("enter an API token to see the fleet"); }
    document.body.dataset.state = "live";
  } catch (err) {
    showError(err.message);
  }
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("aurora-token", state.token);
  tick();
});
$("device-form").addEventListener("submit", (e) => { e.preventDefault(); showDevice().catch((err) => showError(err.message)); });
$("anomalies").addEventListener("click", (e) => {
  const device = e.target.dataset && e.target.dataset.device;
  if (device) { e.preventDefault(); $("device").value = device; showDevice().catch((err) => showError(err.message)); }
});
$("token").value = state.token;
tick();
setInterval(tick, 2000);
