"""The live dashboard: one self-contained page served by the admin
endpoint at ``/dashboard``.  It polls ``/api/status`` and ``/api/connections``
every second and draws a card per connection (latency, uptime, error rate,
quality grade, status colour).  No external assets; data is inserted with
``textContent`` only, never as HTML.
"""

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mcp-sidecar</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;background:#f6f7f9;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} .muted{color:#667}
table{border-collapse:collapse;margin:.8em 0;background:#fff}
td,th{padding:.3em .7em;border-bottom:1px solid #e3e5e8;text-align:left}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:.8em}
.card{background:#fff;border-radius:8px;padding:.8em 1em;border-left:6px solid #9aa}
.card.good{border-color:#2e9d4f}.card.warn{border-color:#d9a400}.card.bad{border-color:#d3383a}
.card h3{margin:0 0 .4em;font-size:1em} .kv{display:grid;grid-template-columns:auto 1fr;gap:.1em .8em}
.pill{display:inline-block;padding:0 .5em;border-radius:1em;background:#eef;font-size:.85em}
.up{color:#2e9d4f}.down{color:#d3383a}
</style></head><body>
<h1>mcp-sidecar <span id="version" class="muted"></span></h1>
<div id="summary" class="muted"></div>
<table><thead><tr><th>route</th><th>listen</th><th>upstream</th><th>health</th><th>circuit</th>
<th>active</th><th>total</th></tr></thead><tbody id="routes"></tbody></table>
<h2 style="font-size:1.1em">connections <span id="count" class="muted"></span></h2>
<div id="cards" class="cards"></div>
<script>
"use strict";
function el(tag, text, cls){const e=document.createElement(tag); if(text!==undefined) e.textContent=String(text); if(cls) e.className=cls; return e;}
function ms(v){return v===null||v===undefined?"-":v.toFixed(v<10?2:0)+" ms";}
function age(s){return s<60?s.toFixed(0)+" s":s<3600?(s/60).toFixed(0)+" min":(s/3600).toFixed(1)+" h";}
function bytes(n){return n<1024?n+" B":n<1048576?(n/1024).toFixed(1)+" KiB":(n/1048576).toFixed(1)+" MiB";}
async function refresh(){
  try{
    const [st, cs] = await Promise.all([fetch("/api/status").then(r=>r.json()), fetch("/api/connections").then(r=>r.json())]);
    document.getElementById("version").textContent = st.version + " pid " + st.pid;
    document.getElementById("summary").textContent = (st.ready ? "ready" : "NOT READY") + " - up " + age(st.uptime_s)
      + (st.draining ? " - draining" : "") + (st.supervisor ? " - worker restarts " + JSON.stringify(st.supervisor.restarts) : "");
    const routes = document.getElementById("routes"); routes.replaceChildren();
    for(const r of st.routes){
      const tr = el("tr");
      tr.append(el("td", r.name), el("td", r.listen.join(", ")), el("td", r.upstream),
        el("td", r.health.state, r.upstream_healthy ? "up" : "down"), el("td", r.circuit.state),
        el("td", r.connections_active), el("td", r.connections_total));
      routes.append(tr);
    }
    document.getElementById("count").textContent = cs.count;
    const cards = document.getElementById("cards"); cards.replaceChildren();
    for(const c of cs.connections){
      const q = c.quality;
      const cls = q.samples === 0 ? "" : q.score >= 90 ? "good" : q.score >= 60 ? "warn" : "bad";
      const card = el("div", undefined, "card " + cls);
      const title = el("h3", "#" + c.id + " " + c.route + " ");
      title.append(el("span", c.protocol + (c.mcp ? " / mcp" : ""), "pill"));
      const kv = el("div", undefined, "kv");
      const rows = [["client", c.client], ["upstream", c.upstream || "-"], ["uptime", age(c.age_s)], ["idle", age(c.idle_s)],
        ["bytes in / out", bytes(c.bytes_client_to_upstream) + " / " + bytes(c.bytes_upstream_to_client)],
        ["TCP RTT client", ms(c.tcp.client && c.tcp.client.rtt_ms)], ["TCP RTT upstream", ms(c.tcp.upstream && c.tcp.upstream.rtt_ms)],
        ["latency p50 / p95", ms(q.p50_ms) + " / " + ms(q.p95_ms) + " (" + q.source + ")"],
        ["error rate", (q.error_rate * 100).toFixed(1) + " %"],
        ["quality", q.samples ? q.score + " (" + q.grade + "), " + q.trend + (q.anomaly ? ", anomaly " + q.anomaly.level : "") : "-"]];
      for(const [k, v] of rows){ kv.append(el("span", k, "muted"), el("span", v)); }
      card.append(title, kv); cards.append(card);
    }
  }catch(err){ document.getElementById("summary").textContent = "cannot reach the admin API: " + err; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
