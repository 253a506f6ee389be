// The mcp-sidecar dashboard: polls the admin API and draws it.
// Rules: data goes into the page with textContent only (never as HTML); every
// view reads the same endpoints proxyctl uses (/api/status, /api/mcp,
// /api/history, /api/connections); the connections table renders one page of
// rows at a time, so a thousand connections stay usable.
"use strict";

const PAGE_ROWS = 100;
const state = {sort: "id", desc: false, filter: "", page: 0, selected: null, connections: [], charts: {}};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function num(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits === undefined ? 2 : digits); }
function ms(v) { return v === null || v === undefined ? "-" : Number(v).toFixed(v < 10 ? 2 : 0) + " ms"; }
function age(s) {
  if (s === null || s === undefined) return "-";
  return s < 60 ? s.toFixed(0) + " s" : s < 3600 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  return n < 1024 ? n.toFixed(0) + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
}
function counts(obj) {
  const parts = Object.entries(obj || {}).map(([k, v]) => k + " " + v);
  return parts.length ? parts.join(", ") : "-";
}
function row(cells, cls) {
  const tr = el("tr", undefined, cls);
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.append(c); tr.append(td); }
    else if (typeof c === "number") tr.append(el("td", c, "num"));
    else tr.append(el("td", c));
  }
  return tr;
}
// Who was slow: a stacked bar of each part's mean (they add up to the mean latency), with the figures.
const PARTS = ["network", "server", "transfer", "client"];
function splitBar(split) {
  if (!split) return "-";
  const total = PARTS.reduce((sum, p) => sum + split[p].mean_ms, 0);
  const box = el("span", undefined, "split");
  const bar = el("span", undefined, "split-bar");
  for (const p of PARTS) {
    const seg = el("span", undefined, "part-" + p);
    seg.style.width = (total > 0 ? (100 * split[p].mean_ms / total) : 0).toFixed(1) + "%";
    seg.title = p + " " + ms(split[p].mean_ms) + " (p95 " + ms(split[p].p95_ms) + ")";
    bar.append(seg);
  }
  box.append(bar, el("span", PARTS.map(p => p[0] + " " + ms(split[p].mean_ms)).join(" · "), "split-text"));
  box.dataset.split = PARTS.map(p => split[p].mean_ms).join(",");
  return box;
}
function fill(tableId, rows, emptyText, width) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    const td = el("td", emptyText, "empty"); td.colSpan = width; const tr = el("tr"); tr.append(td); body.append(tr);
    return;
  }
  for (const r of rows) body.append(r);
}
async function getJson(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok && r.status !== 503) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// --- header and routes -------------------------------------------------------------------

const STATE_CLASS = {serving: "ok", degraded: "warn", down: "bad", draining: "warn", disabled: "bad", not_listening: "bad"};

const GATE_401 = ["missing", "invalid"];  // the gate's results answered 401 (forward/metrics.py GATE_RESULTS)

function sum(obj) { return Object.values(obj || {}).reduce((n, v) => n + v, 0); }
function withBreakdown(total, obj) {
  const cell = el("span", total);
  if (total) cell.append(el("div", counts(obj), "breakdown muted"));
  return cell;
}
function when(unix) { return unix ? age(Date.now() / 1000 - unix) + " ago" : "-"; }

function drawStatus(st, mcp, hist) {
  document.getElementById("version").textContent = st.version + " - pid " + st.pid + " - up " + age(st.uptime_s);
  const badge = document.getElementById("state");
  const reasons = st.reasons || [];
  const label = st.draining ? "draining" : st.ready ? "ready" : "not ready";
  badge.textContent = label;
  badge.className = "badge " + (st.draining ? "warn" : st.ready ? "ok" : "bad");
  document.getElementById("state-reason").textContent = reasons.join("; ");
  const facts = [];
  if (st.warnings && st.warnings.length) facts.push("warnings: " + st.warnings.join("; "));
  if (st.problems && st.problems.length) facts.push("problems: " + st.problems.join("; "));
  if (mcp.tap.subscribers) facts.push("tapped by " + mcp.tap.subscribers + " (dropped " + mcp.tap.dropped + ")");
  document.getElementById("facts").textContent = facts.join(" - ");
  drawFaults(st.faults);
  drawSupervisor(st);
  drawRoutes(st, mcp, hist);
  drawUpstreams(st);
}

function drawFaults(faults) {
  const box = document.getElementById("faults-banner");
  box.hidden = !(faults && faults.enabled);
  if (box.hidden) return;
  const active = faults.faults || [];
  box.replaceChildren(el("span", "FAULT INJECTION ENABLED: " + active.length + " fault(s) active"));
  for (const f of active) {
    const line = el("div", f.route + "/" + f.name + ": " + f.description + " - injected " + f.injected +
      (f.expires_in_s === null ? "" : ", expires in " + age(f.expires_in_s)));
    line.dataset.fault = f.route + "/" + f.name;
    box.append(line);
  }
}

function drawSupervisor(st) {
  const box = document.getElementById("supervision");
  const sup = st.supervisor;
  box.hidden = !sup;
  if (!sup) return;
  const kv = document.getElementById("supervisor");
  kv.replaceChildren();
  const add = (k, v) => kv.append(el("span", k, "muted"), el("span", v));
  add("pid", sup.supervisor_pid);
  add("up", age(sup.supervisor_uptime_s));
  const restarts = Object.entries(sup.restarts || {}).filter(([, n]) => n > 0);
  add("worker restarts", restarts.length ? restarts.map(([k, n]) => k + " " + n).join(", ") : "none");
  add("failures in a row", sup.consecutive_failures);
  const dir = sup.state_dir || {};
  add("state directory", dir.writable === false ? "not taking writes: " + dir.error : "ok");
  const rows = (st.workers || []).map(w => {
    const tr = row(["#" + w.id, w.pid, w.state, age(w.uptime_s), age(w.serving_s), age(w.heartbeat_age_s),
      w.connections_active, w.connections_total]);
    tr.dataset.worker = String(w.id);
    return tr;
  });
  fill("workers", rows, "no worker", 8);
}

function drawRoutes(st, mcp, hist) {
  const byRoute = {};
  for (const r of mcp.routes) byRoute[r.route] = r;
  const now = Date.now() / 1000;
  const rows = st.routes.map(r => {
    const m = byRoute[r.route] || byRoute[r.name] || {};
    let rps = 0, errs = 0, p95 = null;
    for (const t of Object.values(m.transports || {})) {
      rps += t.rate_per_s; errs += t.errors_per_s;
      if (t.p95_ms !== null && (p95 === null || t.p95_ms > p95)) p95 = t.p95_ms;
    }
    const h = hist && hist.routes[r.name];
    const last = (col) => { if (!h || !h[col]) return null; for (let i = h[col].length - 1; i >= 0; i--) if (h[col][i] !== null) return h[col][i]; return null; };
    const stateCell = el("span", r.state, "badge " + (STATE_CLASS[r.state] || ""));
    const wrap = el("span"); wrap.append(stateCell);
    if (r.reason) wrap.append(el("div", r.reason, "reason muted"));
    const gate = r.gate_results || {};
    const conns = el("span", r.connections_active + " / " + r.connections_peak + " / " + r.connections_limit);
    conns.className = "conns";
    const tr = row([r.name, wrap, age(now - r.since_unix), r.listen.join(", ") + " \u2192 " + r.upstream,
      conns, r.connections_total, withBreakdown(sum(r.connections_rejected), r.connections_rejected),
      r.gate ? GATE_401.reduce((n, k) => n + (gate[k] || 0), 0) : "-",
      withBreakdown(sum(r.upstream_connect_failures), r.upstream_connect_failures),
      r.circuit.state, m.era || "-", num(rps), num(errs), ms(p95),
      bytes(last("bytes_in_per_s")) + "/s / " + bytes(last("bytes_out_per_s")) + "/s"]);
    tr.dataset.route = r.name; tr.dataset.state = r.state;
    return tr;
  });
  fill("routes", rows, "no routes", 15);
}

const HEALTH_CLASS = {up: "ok", down: "bad", unknown: "warn", unchecked: ""};

function drawUpstreams(st) {
  const rows = [];
  for (const r of st.routes) {
    const upstreams = (r.health && r.health.upstreams) || [];
    const fails = r.circuit.consecutive_failures;
    const breaker = r.circuit.state + (fails ? ", " + fails + (fails === 1 ? " failure" : " failures") + " in a row" : "") +
      (r.circuit.opened_total ? ", opened " + r.circuit.opened_total + "x" : "");
    for (const u of upstreams) {
      const history = el("span", undefined, "checks");
      for (const c of u.history || []) {
        const mark = el("span", undefined, "chk " + (c.ok ? "ok" : "bad"));
        mark.title = new Date(c.at_unix * 1000).toLocaleTimeString() + ": " + c.result;
        history.append(mark);
      }
      if (!(u.history || []).length) history.textContent = u.state === "unchecked" ? "not checked (health_interval 0)" : "none yet";
      const inRow = u.consecutive_failures ? u.consecutive_failures + " failed" : u.consecutive_successes ? u.consecutive_successes + " passed" : "-";
      const tr = row([r.name, u.address, el("span", u.state, "badge " + (HEALTH_CLASS[u.state] || "")), when(u.since_unix), history, inRow,
        u.last_result || "-", ms(u.last_duration_ms), u.next_interval_s === null ? "-" : "every " + (u.next_interval_s < 1 ? ms(u.next_interval_s * 1000) : age(u.next_interval_s)),
        (r.upstream_connections || {})[u.address] || 0, (r.upstream_failures || {})[u.address] || 0, breaker]);
      tr.dataset.route = r.name; tr.dataset.upstream = u.address; tr.dataset.state = u.state;
      tr.dataset.checks = (u.history || []).map(c => c.ok ? "+" : "-").join("");
      rows.push(tr);
    }
  }
  fill("upstreams", rows, "no upstream", 12);
}

// --- MCP ---------------------------------------------------------------------------------

function drawMcp(mcp) {
  document.getElementById("window").textContent = "(rates and quantiles over the last " + mcp.window_s + " s)";
  const methods = [], transports = [], sessions = [], targets = [], clients = [], facts = [];
  let open = 0, active = 0;
  for (const r of mcp.routes) {
    const streams = Object.entries(r.streams.open);
    facts.push(r.route + ": versions " + counts(r.protocol_versions) + "; streams open " +
      (streams.length ? streams.map(([k, n]) => k + " " + n).join(", ") : "0") +
      "; conformance " + counts(r.conformance) + (r.targets_capped ? "; targets capped " + r.targets_capped : "") +
      "; slow-client answers " + r.slow_client_answers + "; upstream SSE bursts " + r.sse_bursts);
    for (const [method, byTarget] of Object.entries(r.targets)) {
      for (const [target, t] of Object.entries(byTarget)) {
        const tr = row([r.route, method, target, t.requests, num(t.rate_per_s), num(t.errors_per_s), counts(t.outcomes),
          ms(t.p50_ms), ms(t.p95_ms), ms(t.p99_ms)]);
        tr.dataset.target = target;
        targets.push(tr);
      }
    }
    active += r.clients_active;
    for (const c of r.clients) {
      clients.push(row([r.route, c.client, c.transport, c.protocol_version, age(c.age_s), age(c.idle_s), c.requests,
        c.last_method || "-"]));
    }
    for (const [name, m] of Object.entries(r.methods)) {
      const tr = row([r.route, name, m.requests, num(m.rate_per_s), num(m.errors_per_s), counts(m.errors),
        counts(m.outcomes), ms(m.p50_ms), ms(m.p95_ms), ms(m.p99_ms), m.in_flight, counts(m.transports),
        splitBar(m.split)]);
      tr.dataset.method = name;
      methods.push(tr);
    }
    for (const [name, t] of Object.entries(r.transports)) {
      const tr = row([r.route, name, t.requests, num(t.rate_per_s), num(t.errors_per_s), ms(t.p95_ms), t.sessions_open]);
      tr.dataset.transport = name;
      transports.push(tr);
    }
    open += r.sessions_open;
    for (const s of r.sessions) {
      sessions.push(row([r.route, s.session, s.client, s.transport, s.protocol_version, age(s.age_s), age(s.idle_s),
        s.requests, s.last_method || "-"]));
    }
  }
  document.getElementById("mcp-facts").textContent = facts.join(" — ");
  fill("methods", methods, "no MCP requests seen yet", 13);
  fill("targets", targets, "no tool, prompt or resource called yet", 10);
  fill("transports", transports, "no MCP traffic yet", 7);
  fill("sessions", sessions.slice(0, 100), "no MCP session open", 9);
  fill("clients", clients.slice(0, 100), "no stateless MCP client seen", 8);
  document.getElementById("session-count").textContent = "(" + open + " open" + (open > 100 ? ", newest 100 shown" : "") + ")";
  document.getElementById("client-count").textContent = "(" + active + " active in 10 min" + (active > 100 ? ", newest 100 shown" : "") + ")";
}

// --- charts (uPlot) ----------------------------------------------------------------------

const COLORS = ["#2f6fd6", "#d6572f", "#2e9d4f", "#9b3fd6", "#c49a00", "#1c9aa8", "#b03060", "#555"];
// Axis labels are drawn on a canvas: their font is set here so that they can be
// measured.  Ticks are spaced by the widest label they can have (x) or by the
// font's height twice (y), so labels never overlap at any width; a y label has
// as many decimals as its tick step needs, so two ticks never read the same.
const AXIS_FONT = "11px system-ui, sans-serif";
const AXIS_FONT_PX = 11;
const measureCtx = document.createElement("canvas").getContext("2d");
function textWidth(text) { measureCtx.font = AXIS_FONT; return measureCtx.measureText(text).width; }
const X_GAP_PX = 14;
function two(n) { return String(n).padStart(2, "0"); }
function clock(unix, seconds) {
  const d = new Date(unix * 1000);
  return two(d.getHours()) + ":" + two(d.getMinutes()) + (seconds ? ":" + two(d.getSeconds()) : "");
}
function timeLabels(splits, incr) {
  return splits.map(v => v === null ? "" : clock(v, incr < 60 || incr % 60 !== 0));
}
function decimalsFor(step) {
  let d = 0;
  while (d < 6 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6) d++;
  return d;
}
function numberLabels(splits, incr) {
  const top = Math.max(0, ...splits.filter(v => v !== null).map(Math.abs));
  const [div, suffix] = top >= 1e9 ? [1e9, "G"] : top >= 1e6 ? [1e6, "M"] : top >= 1e3 ? [1e3, "k"] : [1, ""];
  const d = decimalsFor(incr / div);
  return splits.map(v => v === null ? "" : v === 0 ? "0" : (v / div).toFixed(d) + suffix);
}
const X_SPACE_PX = textWidth("00:00:00") + X_GAP_PX;
const Y_SPACE_PX = AXIS_FONT_PX * 2.2;
// Tick steps in seconds: uPlot's own jump from one minute to five leaves a
// ten-minute window two labels wide.
const TIME_INCRS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

// What each chart's axes show (data-ticks: [label, from px, to px] along the
// axis), so that a test can check that no two labels overlap.
function recordTicks(fig, u) {
  const out = {};
  for (const [axis, scale] of [[0, "x"], [1, "y"]]) {
    const seen = fig.labels && fig.labels[axis];
    if (!seen) continue;
    out[scale] = seen.splits.map((v, i) => {
      const at = u.valToPos(v, scale);
      const half = axis === 0 ? textWidth(seen.labels[i]) / 2 : AXIS_FONT_PX / 2;
      return [seen.labels[i], Math.round((at - half) * 10) / 10, Math.round((at + half) * 10) / 10];
    });
  }
  fig.dataset.ticks = JSON.stringify(out);
}

function chartWidth(fig) { return Math.max(200, fig.clientWidth - 16); }

function makeChart(fig, routes, data) {
  fig.labels = {};
  const remember = (axis, fmt) => (u, splits, _axisIdx, _space, incr) => {
    const labels = fmt(splits, incr);
    fig.labels[axis] = {splits, labels};
    return labels;
  };
  const opts = {
    width: chartWidth(fig), height: 170,
    series: [{}].concat(routes.map((r, i) => ({label: r, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false}))),
    axes: [
      {font: AXIS_FONT, space: X_SPACE_PX, incrs: TIME_INCRS, values: remember(0, timeLabels)},
      {font: AXIS_FONT, space: Y_SPACE_PX, size: 56, values: remember(1, numberLabels)},
    ],
    legend: {show: true, live: false}, cursor: {drag: {x: false, y: false}},
    hooks: {draw: [u => recordTicks(fig, u)]},
  };
  return new uPlot(opts, data, fig);
}

const resizing = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(entries => {
  for (const entry of entries) {
    const chart = state.charts[entry.target.id];
    if (chart && Math.abs(chart.plot.width - chartWidth(entry.target)) > 1) {
      chart.plot.setSize({width: chartWidth(entry.target), height: 170});
    }
  }
});

function drawCharts(hist) {
  if (!hist) return;
  document.getElementById("history-span").textContent =
    "(" + hist.points + " points every " + hist.interval_s + " s, up to " + age(hist.length * hist.interval_s) + ")";
  const routes = Object.keys(hist.routes);
  for (const fig of document.querySelectorAll(".chart")) {
    const key = fig.dataset.series;
    const data = [hist.t].concat(routes.map(r => hist.routes[r][key] || []));
    const points = data.slice(1).reduce((n, col) => n + col.filter(v => v !== null).length, 0);
    fig.dataset.points = String(points);
    const signature = key + "|" + routes.join(",");
    let chart = state.charts[fig.id];
    if (chart && chart.signature !== signature) { chart.plot.destroy(); chart = null; }
    if (!chart) {
      fig.replaceChildren(el("figcaption", fig.dataset.title));
      if (typeof uPlot === "undefined") { fig.append(el("div", "chart library did not load", "empty")); continue; }
      chart = state.charts[fig.id] = {signature, plot: makeChart(fig, routes, data)};
      if (resizing) resizing.observe(fig);
    } else {
      chart.plot.setData(data);
    }
  }
}

// --- connections -------------------------------------------------------------------------

function sortValue(c, key) {
  const q = c.quality;
  switch (key) {
    case "bytes": return c.bytes_client_to_upstream + c.bytes_upstream_to_client;
    case "rtt": return c.tcp && c.tcp.client ? c.tcp.client.rtt_ms : -1;
    case "p50": return q.samples ? q.p50_ms : -1;
    case "error_rate": return q.error_rate;
    case "score": return q.samples ? q.score : 101;
    default: return c[key];
  }
}
function connMatches(c, f) {
  if (!f) return true;
  const text = [c.id, c.route, c.client, c.protocol, c.mcp ? "mcp" : "", c.quality.grade].join(" ").toLowerCase();
  return f.toLowerCase().split(/\s+/).every(w => text.includes(w));
}
function drawConnections(list) {
  const filtered = list.connections.filter(c => connMatches(c, state.filter));
  filtered.sort((a, b) => {
    const x = sortValue(a, state.sort), y = sortValue(b, state.sort);
    const d = x < y ? -1 : x > y ? 1 : 0;
    return state.desc ? -d : d;
  });
  const pages = Math.max(1, Math.ceil(filtered.length / PAGE_ROWS));
  state.page = Math.min(state.page, pages - 1);
  const shown = filtered.slice(state.page * PAGE_ROWS, (state.page + 1) * PAGE_ROWS);
  document.getElementById("conn-count").textContent = "(" + list.count + " open" +
    (filtered.length !== list.connections.length ? ", " + filtered.length + " match" : "") +
    (list.next_offset !== null ? ", first " + list.connections.length + " listed" : "") + ")";
  document.getElementById("page").textContent = "page " + (state.page + 1) + " of " + pages;
  const rows = shown.map(c => {
    const q = c.quality;
    const waiting = c.upstream === null;
    const latency = waiting ? "waiting for upstream" : q.samples ? ms(q.p50_ms) + " / " + ms(q.p95_ms) + " (" + q.source + ")" : "no samples yet";
    const grade = q.samples ? q.score + " (" + q.grade + ")" + (q.deductions.length ? " - " + q.deductions.length + " deduction(s)" : "") : "-";
    const tr = row([(c.worker ? "w" + c.worker + " " : "") + c.id, c.route, c.client, c.protocol + (c.mcp ? " / mcp" : ""), age(c.age_s), age(c.idle_s),
      bytes(c.bytes_client_to_upstream) + " / " + bytes(c.bytes_upstream_to_client),
      c.tcp && c.tcp.client ? ms(c.tcp.client.rtt_ms) : "-", latency,
      q.ok + q.errors ? (q.error_rate * 100).toFixed(1) + " %" : "-", grade], "clickable" + (state.selected === c.id ? " selected" : ""));
    tr.dataset.id = c.id;
    tr.addEventListener("click", () => { state.selected = c.id; drawDetail(); drawConnections(list); });
    return tr;
  });
  fill("connections", rows, state.filter ? "no connection matches" : "no open connection", 11);
}

async function drawDetail() {
  const box = document.getElementById("detail");
  if (state.selected === null) { box.hidden = true; return; }
  let c;
  try { c = await getJson("/api/connections/" + state.selected); } catch (e) { c = null; }
  if (!c || c.error) { box.hidden = false; document.getElementById("detail-title").textContent = "connection #" + state.selected + " has closed"; document.getElementById("detail-body").replaceChildren(); return; }
  box.hidden = false;
  const q = c.quality;
  document.getElementById("detail-title").textContent = "connection #" + c.id + (c.worker ? " (worker " + c.worker + ")" : "") + " - " + c.route + " - " + c.client + " \u2192 " + (c.upstream || "(connecting)");
  const kv = el("div", undefined, "kv");
  const add = (k, v) => kv.append(el("span", k, "muted"), el("span", v));
  add("grade", q.samples ? q.score + " (" + q.grade + "), " + q.trend : "no samples yet");
  add("latency source", q.source + ", " + q.samples + " samples");
  add("latency avg / p50 / p95 / p99", [q.avg_ms, q.p50_ms, q.p95_ms, q.p99_ms].map(ms).join(" / "));
  add("errors", q.errors + " of " + (q.ok + q.errors));
  add("reconnects", q.reconnects + " earlier streams from this client (10 min)");
  const ded = el("span");
  if (!q.deductions.length) ded.textContent = "none: 100 points";
  for (const d of q.deductions) ded.append(el("div", "-" + d.points + ": " + d.reason, "deduction"));
  kv.append(el("span", "deductions", "muted"), ded);
  for (const leg of ["client", "upstream"]) {
    const t = c.tcp[leg];
    add("TCP " + leg, t ? "rtt " + ms(t.rtt_ms) + ", rttvar " + ms(t.rttvar_ms) + ", retrans " + t.total_retrans : "-");
  }
  if (c.tls) add("TLS", counts(c.tls));
  if (c.faults && c.faults.length) add("faults injected", c.faults.join("; "));
  const o = c.observed;
  if (o) {
    add("observed", o.mode + (o.mcp ? ", MCP messages " + counts(o.mcp_messages) : ""));
    if (o.http && o.http.last) add("last HTTP", o.http.last.method + " " + o.http.last.path + " " + o.http.last.status + " in " + ms(o.http.last.total_ms));
    if (o.sse) add("SSE", o.sse.events + " events, " + o.sse.keepalives + " keepalives, longest gap " + o.sse.max_gap_s + " s");
    if (o.websocket && o.websocket.close) add("WebSocket close", o.websocket.close.code + " from " + o.websocket.close.from);
  }
  document.getElementById("detail-body").replaceChildren(kv);
}

// --- polling -----------------------------------------------------------------------------

let lastHistory = null;
async function refresh() {
  try {
    const [st, mcp] = await Promise.all([getJson("/api/status"), getJson("/api/mcp")]);
    drawStatus(st, mcp, lastHistory);
    drawMcp(mcp);
  } catch (err) {
    const badge = document.getElementById("state");
    badge.textContent = "unreachable"; badge.className = "badge bad";
    document.getElementById("state-reason").textContent = "cannot reach the admin API: " + err;
  }
}
async function refreshHistory() {
  try { lastHistory = await getJson("/api/history"); drawCharts(lastHistory); }
  catch (err) { document.getElementById("history-span").textContent = "(history unavailable: " + err.message + ")"; }
}
async function refreshConnections() {
  try {
    const list = await getJson("/api/connections?limit=1000");
    state.connections = list;
    drawConnections(list);
    if (state.selected !== null) drawDetail();
  } catch (err) { document.getElementById("conn-count").textContent = "(unavailable: " + err.message + ")"; }
}

for (const th of document.querySelectorAll("#connections th")) {
  th.addEventListener("click", () => {
    const key = th.dataset.key;
    state.desc = state.sort === key ? !state.desc : false;
    state.sort = key;
    for (const other of document.querySelectorAll("#connections th")) other.classList.toggle("sorted", other === th);
    if (state.connections.connections) drawConnections(state.connections);
  });
}
document.getElementById("filter").addEventListener("input", (e) => {
  state.filter = e.target.value; state.page = 0;
  if (state.connections.connections) drawConnections(state.connections);
});
document.getElementById("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); if (state.connections.connections) drawConnections(state.connections); });
document.getElementById("next").addEventListener("click", () => { state.page += 1; if (state.connections.connections) drawConnections(state.connections); });

refreshHistory().then(refresh);
refreshConnections();
setInterval(refresh, 1000);
setInterval(refreshConnections, 2000);
setInterval(refreshHistory, 5000);
