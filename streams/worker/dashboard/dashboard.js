// The worker's dashboard: polls /sendgate/status and draws it (no library, no build step).
"use strict";
const OUTCOMES = ["accepted", "delayed", "rejected", "released", "cancelled"];
const COLOURS = {accepted: "#2e8540", delayed: "#e6a700", rejected: "#c0392b", released: "#2a7ab0", cancelled: "#888"};
const POLL_MS = 2000;

function text(id, value) { document.getElementById(id).textContent = value; }
function iso(ms) { return ms == null ? "none" : new Date(ms).toISOString().replace(".000", ""); }
function rows(tableId, items, cells) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...items.map(item => {
    const tr = document.createElement("tr");
    for (const value of cells(item)) { const td = document.createElement("td"); td.textContent = value; tr.append(td); }
    return tr;
  }));
}

function chart(history) {
  // stacked bars, one per second of the last 5 minutes
  const svg = document.getElementById("rate-chart");
  const width = 600, height = 160, span = 300;
  const end = history.length ? history[history.length - 1].t : 0;
  const max = Math.max(1, ...history.map(h => OUTCOMES.reduce((sum, o) => sum + h[o], 0)));
  const bar = width / span, parts = [];
  for (const h of history) {
    let y = height;
    const x = width - (end - h.t + 1) * bar;
    for (const o of OUTCOMES) {
      const hgt = h[o] / max * (height - 10);
      if (hgt > 0) { y -= hgt; parts.push(`<rect x="${x}" y="${y}" width="${Math.max(bar - .5, .5)}" height="${hgt}" fill="${COLOURS[o]}"><title>${o}: ${h[o]}</title></rect>`); }
    }
  }
  parts.push(`<text x="4" y="12" font-size="10">${max}/s</text>`);
  svg.innerHTML = parts.join("");
}

function render(s) {
  const state = document.getElementById("state");
  state.textContent = s.state.ready ? "ready" : (s.state.recovering ? "recovering" : s.state.rebalancing ? "rebalancing" : "not ready");
  state.className = "state " + (s.state.ready ? "ready" : "not-ready");
  text("reasons", s.state.reasons.join("; "));
  text("updated", "updated " + new Date(s.now * 1000).toLocaleTimeString());
  for (const o of OUTCOMES) text(`total-${o}`, s.totals[o]);
  document.getElementById("reasons-list").replaceChildren(...s.top_reasons.map(r => {
    const li = document.createElement("li"); li.textContent = `${r.reason}: ${r.count}`; return li; }));
  for (const k of ["opt_out", "opt_in", "ambiguous"]) text(`consent-${k}`, s.consent[k]);
  text("pending-held", s.pending.held);
  text("pending-next", iso(s.pending.next_release_ts));
  rows("senders", s.riskiest_senders, r => [r.app, r.sender, r.paced]);
  rows("lag", s.partitions, p => [p.partition, p.end, p.committed, p.lag]);
  text("batches-count", s.batches.count);
  text("batches-failed", s.batches.failed);
  for (const [stage, t] of Object.entries(s.batches.stages)) text(`stage-${stage}`, t.last_ms == null ? "–" : `${t.last_ms} / ${t.max_ms}`);
  rows("latest", s.latest, d => [iso(d.ts), d.app, d.sender, d.request_id, d.outcome, d.reason]);
  chart(s.history);
  document.body.dataset.loaded = "true";  // for tests: the first status has been drawn
}

// The operator token (SENDGATE_OPERATOR_TOKEN), given once as /dashboard#token=...: kept for this
// tab only, sent with every request. Without it the page shows no sender or request.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("sendgate-token");
if (TOKEN) sessionStorage.setItem("sendgate-token", TOKEN);
const AUTH = TOKEN ? {Authorization: `Bearer ${TOKEN}`} : {};

async function poll() {
  try {
    const response = await fetch("/sendgate/status", {cache: "no-store", headers: AUTH});
    render(await response.json());
  } catch (err) {
    text("reasons", "the worker does not answer: " + err);
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("legend").innerHTML = OUTCOMES.map(o => `<li><span style="background:${COLOURS[o]}"></span>${o}</li>`).join("");
document.getElementById("inspect").addEventListener("submit", async event => {
  event.preventDefault();
  const f = new FormData(event.target), app = encodeURIComponent(f.get("app"));
  const sender = f.get("sender"), userkey = f.get("userkey");
  const url = userkey ? `/sendgate/userkeys/${app}/${encodeURIComponent(userkey)}` + (sender ? `?sender=${encodeURIComponent(sender)}` : "")
                      : `/sendgate/senders/${app}/${encodeURIComponent(sender)}`;
  const response = await fetch(url, {headers: AUTH});
  document.getElementById("inspection").textContent = JSON.stringify(await response.json(), null, 2);
});
poll();
