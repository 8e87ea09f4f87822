/* Berth dashboard: polls GET /ui/api/state and draws it (docs/dashboard.md).
 * Text from the server only ever goes into the page as text (textContent),
 * never as markup. */
"use strict";

(function () {
  const POLL_MS = 2000;
  const WINDOW_S = 300;
  const PALETTE = ["#2f6fdf", "#e8710a", "#1a7f37", "#a626a4", "#0f9d9a",
                   "#c2185b", "#5f6368", "#8d6e00"];
  const ERROR_COLOR = "#cf222e";

  const $ = (id) => document.getElementById(id);

  /* ---- formatting ---- */

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function clock(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function lastValue(arr) {
    for (let i = arr.length - 1; i >= 0; i--)
      if (arr[i] !== null && arr[i] !== undefined) return arr[i];
    return null;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function stateClass(state) {
    if (state === "READY") return "ok";
    if (state === "LOADING" || state === "RESTARTING" || state === "UNLOADING") return "warn";
    return "bad";
  }

  /* ---- charts ---- */

  /* The x axis spans the history the server holds (at least a minute,
   * at most five), so a server that just started fills the chart. */
  function span(xs) {
    const oldest = xs.length ? -xs[0] : 0;
    return Math.min(WINDOW_S, Math.max(60, Math.ceil(oldest / 60) * 60));
  }

  function tickLabel(v, min) {
    if (v === 0) return "now";
    return min < -120 ? `${v / 60} min` : `${v} s`;
  }

  function makeChart(figureId, yTitle) {
    const fig = $(figureId);
    const canvas = fig.querySelector("canvas");
    if (typeof Chart === "undefined") return { fig, chart: null };
    const chart = new Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        spanGaps: false,
        elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 1.6, tension: 0 } },
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: {
            type: "linear", min: -WINDOW_S, max: 0,
            ticks: { callback: function (v) { return tickLabel(v, this.min); } },
          },
          y: { beginAtZero: true, grace: "10%", title: { display: true, text: yTitle } },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
    return { fig, chart };
  }

  const charts = {
    rate: makeChart("chart-rate", "req/s"),
    latency: makeChart("chart-latency", "ms"),
    batch: makeChart("chart-batch", "rows"),
    queue: makeChart("chart-queue", "requests"),
  };

  /* [{label, values, color, dash}] -> the chart's datasets; x is seconds
   * before the server's "now". Keeps dataset objects between polls. */
  function draw(entry, xs, lines) {
    let points = 0;
    for (const line of lines)
      for (const v of line.values) if (v !== null && v !== undefined) points++;
    entry.fig.dataset.points = String(points);
    entry.fig.dataset.series = String(lines.length);
    if (!entry.chart) return;
    const x = entry.chart.options.scales.x;
    x.min = -span(xs);
    x.ticks.stepSize = x.min < -120 ? 60 : 15;
    const old = new Map(entry.chart.data.datasets.map((d) => [d.label, d]));
    entry.chart.data.datasets = lines.map((line) => {
      const d = old.get(line.label) || { label: line.label };
      d.data = line.values.map((v, i) => ({ x: xs[i], y: v === undefined ? null : v }));
      d.borderColor = line.color;
      d.backgroundColor = line.color;
      d.borderDash = line.dash ? [5, 4] : [];
      return d;
    });
    entry.chart.update("none");
  }

  function renderCharts(state) {
    const now = state.server.now_ms;
    const xs = state.times_ms.map((t) => (t - now) / 1000);
    const rate = [], latency = [], batch = [], queue = [];
    const errorSum = xs.map(() => null);
    state.models.forEach((m, k) => {
      const color = PALETTE[k % PALETTE.length];
      const label = `${m.name} v${m.version}`;
      const s = m.series;
      rate.push({ label, values: s.rate, color });
      latency.push({ label: `${label} p99`, values: s.p99_ms, color });
      latency.push({ label: `${label} p50`, values: s.p50_ms, color, dash: true });
      batch.push({ label, values: s.batch, color });
      queue.push({ label, values: s.queue, color });
      s.error_rate.forEach((v, i) => {
        if (v !== null) errorSum[i] = (errorSum[i] || 0) + v;
      });
    });
    if (errorSum.some((v) => v !== null && v > 0))
      rate.push({ label: "errors", values: errorSum, color: ERROR_COLOR, dash: true });
    draw(charts.rate, xs, rate);
    draw(charts.latency, xs, latency);
    draw(charts.batch, xs, batch);
    draw(charts.queue, xs, queue);

    /* the latest values, as text */
    const latest = (key) => state.models.map((m) => lastValue(m.series[key])).filter((v) => v !== null);
    const sum = (a) => (a.length ? a.reduce((x, y) => x + y, 0) : null);
    const max = (a) => (a.length ? Math.max(...a) : null);
    $("latest-rate").textContent = `${fmt(sum(latest("rate")))} req/s`;
    $("latest-latency").textContent = `p50 ${fmt(max(latest("p50_ms")))} · p99 ${fmt(max(latest("p99_ms")))} ms`;
    $("latest-batch").textContent = `${fmt(max(latest("batch")))} rows`;
    $("latest-queue").textContent = `${fmt(sum(latest("queue")))} waiting`;
  }

  /* ---- tables ---- */

  function renderModels(state) {
    const body = $("models").tBodies[0];
    const rows = state.models.map((m) => {
      const tr = el("tr");
      tr.dataset.model = m.name;
      tr.dataset.version = m.version;
      tr.append(el("td", m.name, "model-name"), el("td", m.version, "model-version"));
      const st = el("td");
      const badge = el("span", m.state, `badge state ${stateClass(m.state)}`);
      if (m.reason) badge.title = m.reason;
      st.append(badge);
      tr.append(st);
      /* ready/wanted: the autoscaler's desired count (docs/autoscaling.md) */
      const wanted = m.instances_desired ?? m.instances;
      const workers = el("td", `${m.workers_ready}/${wanted}`, "workers");
      if (!m.resident) workers.append(el("span", " asleep", "asleep"));
      if (m.panic) workers.append(el("span", " panic", "panic"));
      workers.title = "ready / desired worker instances";
      tr.append(workers);
      tr.append(el("td", m.max_batch_size || "–", "num"));
      tr.append(el("td", m.queue_depth, "num queue"));
      tr.append(el("td", m.inflight, "num"));
      tr.append(el("td", m.requests, "num requests"));
      tr.append(el("td", m.errors, "num errors"));
      tr.append(el("td", fmt(lastValue(m.series.rate)), "num rate"));
      tr.append(el("td", fmt(lastValue(m.series.p50_ms)), "num p50"));
      tr.append(el("td", fmt(lastValue(m.series.p99_ms)), "num p99"));
      return tr;
    });
    body.replaceChildren(...rows);
    $("no-models").hidden = rows.length > 0;
  }

  function renderErrors(state) {
    const body = $("errors").tBodies[0];
    const rows = state.errors.map((x) => {
      const tr = el("tr");
      tr.append(el("td", clock(x.time_ms)), el("td", x.model), el("td", x.version),
                el("td", x.protocol), el("td", `${x.http} ${x.code}`),
                el("td", x.count, "num"), el("td", x.message, "message"));
      return tr;
    });
    body.replaceChildren(...rows);
    $("no-errors").hidden = rows.length > 0;
    $("errors-total").textContent = state.server.errors_total ? `(${state.server.errors_total} since start)` : "";
  }

  /* ---- polling ---- */

  function setStatus(text, cls) {
    const b = $("server-status");
    b.textContent = text;
    b.className = `badge ${cls}`;
  }

  function render(state) {
    $("server-version").textContent = `version ${state.server.version} · up ${fmt(state.server.uptime_s)} s`;
    setStatus(state.server.draining ? "draining" : "live", state.server.draining ? "warn" : "ok");
    $("updated").textContent = `updated ${clock(state.server.now_ms)}`;
    renderModels(state);
    renderCharts(state);
    renderErrors(state);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  }

  async function poll() {
    try {
      const r = await fetch(new URL("/ui/api/state", location.origin), { cache: "no-store", credentials: "same-origin" });
      if (r.status === 401) {
        setStatus("sign-in needed", "bad");
      } else if (!r.ok) {
        setStatus(`error ${r.status}`, "bad");
      } else {
        render(await r.json());
      }
    } catch (e) {
      setStatus("disconnected", "bad");
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();
