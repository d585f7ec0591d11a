// The bridge's live dashboard: polls /status/server (the original's SHOW_STATUS) and /status/activity (recent
// rates, latencies and errors, every model's requests) and draws them. No libraries, no CDN: the charts are plain canvas paths.
"use strict";

const POLL_MS = 2000;
const KEY_STORAGE = "bertServingApiKey";
let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";

class Unauthorized extends Error {}

async function getJson(path) {
  const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("this server requires an API key");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setText(id, value) {
  const element = document.getElementById(id);
  element.textContent = value === null || value === undefined ? "–" : String(value);
  return element;
}

function formatNumber(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function formatDuration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  const parts = d ? [`${d}d`, `${h}h`, `${m}m`] : h ? [`${h}h`, `${m}m`] : [`${m}m`];
  return `${parts.join(" ")} ${s % 60}s`;
}

function renderStatus(server) {
  const statistic = server.statistic || {};
  for (const key of ["num_data_request", "num_total_seq", "num_active_client", "num_total_client"]) {
    setText(key.replace(/_/g, "-"), statistic[key] ?? 0).dataset.value = statistic[key] ?? 0;
  }
  setText("server-version", server.server_version);
  setText("normalize", server.normalize ? "yes (unit length)" : "no");
}

// What the server config says: AUTO (a sentence-transformers model's own pooling) and what it resolved to.
function poolingText(activity, server) {
  const auto = server.sentence_transformers;
  return auto ? `AUTO: ${activity.pooling_strategy} (sentence-transformers '${auto.pooling_mode}')`
              : activity.pooling_strategy;
}

function renderActivity(activity, server) {
  setText("model", activity.model);
  setText("pooling", poolingText(activity, server));
  setText("pooling-layer", (activity.pooling_layer || []).join(", "));
  setText("max-seq-len", activity.max_seq_len === null ? "NONE" : activity.max_seq_len);
  setText("output-dim", activity.output_dim);
  setText("uptime", formatDuration(activity.uptime_s)).dataset.value = activity.uptime_s;

  const inFlight = Object.values(activity.in_flight).reduce((a, b) => a + b, 0);
  setText("in-flight", inFlight).dataset.value = inFlight;
  const errors = Object.entries(activity.errors).sort((a, b) => b[1] - a[1]);
  const numErrors = errors.reduce((sum, [, n]) => sum + n, 0);
  setText("num-errors", numErrors).dataset.value = numErrors;

  const latency = activity.latency_ms;
  setText("latency-window", latency.window_s);
  setText("latency-count", latency.count);
  for (const q of ["p50", "p90", "p99"]) {
    const cell = setText(`latency-${q}`, latency[q] === null ? "–" : `${formatNumber(latency[q], 1)} ms`);
    cell.dataset.value = latency[q] ?? "";
  }

  fillRows("models", activity.models.map((m) => [m.id, m.task ?? "–", m.semantics ?? "–", m.dimensions ?? "–",
                                                 m.max_tokens ?? "–",
                                                 m.ready ? "yes" : "no", m.requests.success, m.requests.error]));
  fillRows("frontends", Object.entries(activity.requests).map(([name, n]) => [name, n.success, n.error]));
  fillRows("errors", errors.length ? errors : [["none", ""]]);

  const series = activity.series;
  const minutes = series.seconds_ago[0] / 60;
  drawChart(document.getElementById("sentences-chart"), series.sentences_per_s, minutes);
  drawChart(document.getElementById("requests-chart"), series.requests_per_s, minutes);
  const idle = inFlight === 0 && series.requests_per_s[series.requests_per_s.length - 1] === 0;
  setText("sentences-rate", rateText(series.sentences_per_s, idle));
  setText("requests-rate", rateText(series.requests_per_s, idle));
}

// "now": the newest bucket, requests finished in the last bucket_s seconds (the buckets slide with the clock, so it
// falls to 0 within bucket_s of the load stopping); "idle" when nothing finished then and nothing is in flight.
function rateText(values, idle) {
  return idle ? "idle" : `now ${formatNumber(values[values.length - 1], 1)}/s`;
}

function fillRows(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const row = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      row.appendChild(td);
    }
    return row;
  }));
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function drawChart(canvas, values, minutes) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const left = 44, right = 8, top = 8, bottom = 20;
  const plotWidth = width - left - right, plotHeight = height - top - bottom;
  const top_value = niceCeiling(Math.max(...values));
  const style = getComputedStyle(document.documentElement);

  g.font = "11px system-ui, sans-serif";
  g.fillStyle = style.getPropertyValue("--muted");
  g.strokeStyle = "rgba(0, 0, 0, .08)";
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = top + plotHeight * (1 - i / 4);
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(left + plotWidth, y);
    g.stroke();
    g.fillText(String(+(top_value * i / 4).toPrecision(3)), left - 6, y);
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  for (let i = 0; i <= 5; i++) {
    const label = i === 5 ? "now" : `-${+(minutes * (1 - i / 5)).toFixed(1)} min`;
    g.textAlign = i === 0 ? "left" : i === 5 ? "right" : "center";
    g.fillText(label, left + plotWidth * i / 5, top + plotHeight + 5);
  }

  const x = (i) => left + (values.length === 1 ? plotWidth : plotWidth * i / (values.length - 1));
  const y = (v) => top + plotHeight * (1 - v / top_value);
  g.beginPath();
  values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.strokeStyle = style.getPropertyValue("--line");
  g.lineWidth = 1.5;
  g.stroke();
  g.lineTo(x(values.length - 1), y(0));
  g.lineTo(x(0), y(0));
  g.closePath();
  g.fillStyle = style.getPropertyValue("--fill");
  g.fill();
}

async function renderReadiness() {
  const badge = document.getElementById("ready");
  try {
    const response = await fetch("/ready", { cache: "no-store" });
    const body = await response.json();
    badge.dataset.state = response.ok ? "ready" : "unavailable";
    badge.textContent = response.ok ? "ready" : "not ready";
    badge.title = response.ok ? `Triton ${body.triton}` : body.description;
  } catch (error) {
    badge.dataset.state = "unavailable";
    badge.textContent = "unreachable";
    badge.title = String(error);
  }
}

function askForKey() {
  const form = document.getElementById("key-form");
  form.hidden = false;
  form.onsubmit = (event) => {
    event.preventDefault();
    apiKey = document.getElementById("key-input").value.trim();
    sessionStorage.setItem(KEY_STORAGE, apiKey);
    form.hidden = true;
    refresh();
  };
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  renderReadiness();
  try {
    const [server, activity] = await Promise.all([getJson("/status/server"), getJson("/status/activity")]);
    renderStatus(server);
    renderActivity(activity, server);
    const updated = setText("updated", `updated ${new Date().toLocaleTimeString()}`);
    updated.dataset.updates = String(Number(updated.dataset.updates || 0) + 1);
  } catch (error) {
    if (error instanceof Unauthorized) {
      askForKey();
      setText("updated", error.message);
      return;  // polling resumes once a key is entered
    }
    setText("updated", `update failed: ${error.message}`);
  }
  timer = setTimeout(refresh, POLL_MS);
}

refresh();
