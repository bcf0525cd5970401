// Pulse verifier dashboard. Reads the admin JSON API every 2 seconds and
// renders it with DOM methods only: every value from the API is set through
// textContent or setAttribute, never parsed as HTML.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const VERDICTS = ["TRUSTED", "DEGRADED", "UNTRUSTED", "CLOCK_DESYNC", "BLINDED"];
  // Worst first: the rows an operator must look at come to the top.
  const ORDER = { UNTRUSTED: 0, BLINDED: 1, CLOCK_DESYNC: 2, DEGRADED: 3, UNKNOWN: 4, TRUSTED: 5 };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function cell(row, text, className) {
    const td = el("td", className, text);
    row.appendChild(td);
    return td;
  }

  // verdictKey maps an API verdict to a known class suffix.
  function verdictKey(v) {
    return VERDICTS.includes(v) ? v : "UNKNOWN";
  }

  function badge(verdict) {
    const k = verdictKey(verdict);
    if (k !== "UNKNOWN") return el("span", "badge verdict-" + k, k);
    // Enrolled but not verified yet (UNSPECIFIED), or a verdict this page
    // does not know: grey.
    const b = el("span", "badge verdict-UNKNOWN", verdict === "UNSPECIFIED" || !verdict ? "PENDING" : verdict);
    b.title = "no verdict yet";
    return b;
  }

  function ago(now, t) {
    if (!t) return "never";
    let s = Math.round((Date.parse(now) - Date.parse(t)) / 1000);
    if (!isFinite(s)) return "?";
    if (s < 0) s = 0;
    if (s < 60) return s + "s ago";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s ago";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m ago";
    return Math.floor(h / 24) + "d ago";
  }

  function when(t) {
    if (!t) return "";
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  class AuthError extends Error {}

  async function getJSON(path) {
    const r = await fetch(path, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    if (r.status === 401 || r.status === 403) throw new AuthError("not authenticated (HTTP " + r.status + "): reopen the dashboard with ?token= or an operator certificate");
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { msg += ": " + (await r.json()).error; } catch (_) { /* not JSON */ }
      throw new Error(path + ": " + msg);
    }
    return r.json();
  }

  function renderSummary(agents) {
    const counts = {};
    for (const a of agents) {
      const k = verdictKey(a.verdict);
      counts[k] = (counts[k] || 0) + 1;
    }
    const box = $("summary");
    const parts = [];
    for (const k of Object.keys(ORDER).sort((x, y) => ORDER[x] - ORDER[y])) {
      if (!counts[k]) continue;
      const b = el("span", "badge verdict-" + k, (k === "UNKNOWN" ? "PENDING" : k) + " " + counts[k]);
      b.setAttribute("data-summary", k);
      parts.push(b);
    }
    parts.push(el("span", null, agents.length + " agents"));
    box.replaceChildren(...parts);
  }

  function renderAgents(data) {
    const agents = (data.agents || []).slice();
    agents.sort((a, b) => (ORDER[verdictKey(a.verdict)] - ORDER[verdictKey(b.verdict)]) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const rows = agents.map((a) => {
      const tr = el("tr", "row-" + verdictKey(a.verdict));
      tr.setAttribute("data-agent-id", a.id);
      tr.setAttribute("data-verdict", a.verdict);
      tr.setAttribute("data-trust", a.trust);
      tr.title = [a.address ? "address " + a.address : "", a.policy_digest ? "policy " + a.policy_digest : ""].filter(Boolean).join(", ");
      cell(tr, a.id, "mono agent-id");
      cell(tr, a.partition);
      cell(tr, null, "status").appendChild(badge(a.verdict));
      const tpm = a.trust === "tpm";
      cell(tr, null, "trust-cell").appendChild(el("span", "trust " + (tpm ? "trust-tpm" : "trust-mtls"), tpm ? "TPM" : "mTLS-only"));
      cell(tr, a.agent_version || "—", "mono agent-version").title = "as the agent's last verified pulse reported it";
      const age = cell(tr, ago(data.now, a.last_pulse), "age");
      if (a.last_pulse) age.title = when(a.last_pulse);
      cell(tr, a.reason, "mono reason");
      cell(tr, a.message, "message");
      cell(tr, a.open_alerts, "num open-alerts" + (a.open_alerts > 0 ? " sev-1" : ""));
      cell(tr, a.connected ? "connected" : "—", "connected");
      return tr;
    });
    $("agent-rows").replaceChildren(...rows);
    $("agents-empty").hidden = rows.length > 0;
    renderSummary(agents);
  }

  async function ack(id, button) {
    button.disabled = true;
    try {
      const r = await fetch("/api/v1/alerts/" + encodeURIComponent(id) + "/ack", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json", Accept: "application/json" }, body: "{}",
      });
      if (!r.ok) {
        let msg = "HTTP " + r.status;
        try { msg += ": " + (await r.json()).error; } catch (_) { /* not JSON */ }
        throw new Error("acknowledge " + id + ": " + msg);
      }
      clearError();
      refreshNow();
    } catch (e) {
      showError(e.message);
      button.disabled = false;
    }
  }

  function renderAlerts(data) {
    const rows = (data.alerts || []).map((a) => {
      const tr = el("tr");
      tr.setAttribute("data-alert-id", a.id);
      tr.setAttribute("data-agent-id", a.agent_id);
      cell(tr, when(a.created_at), "mono");
      cell(tr, a.agent_id, "mono");
      cell(tr, a.kind);
      cell(tr, a.severity, "num sev-" + Number(a.severity));
      cell(tr, a.reason, "mono");
      cell(tr, a.message, "message");
      const b = el("button", "ack", "Acknowledge");
      b.type = "button";
      b.addEventListener("click", () => ack(a.id, b));
      cell(tr).appendChild(b);
      return tr;
    });
    $("alert-rows").replaceChildren(...rows);
    $("alerts-empty").hidden = rows.length > 0;
  }

  function renderQuarantine(data) {
    const rows = (data.quarantine || []).map((q) => {
      const tr = el("tr");
      tr.setAttribute("data-address", q.address);
      cell(tr, q.address, "mono");
      cell(tr, q.offender, "mono");
      cell(tr, q.reason);
      cell(tr, when(q.since), "mono");
      return tr;
    });
    $("quarantine-rows").replaceChildren(...rows);
    $("quarantine-empty").hidden = rows.length > 0;
  }

  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  let timer = null;
  let running = false;

  async function refresh() {
    if (running) return;
    running = true;
    clearTimeout(timer);
    try {
      const [agents, alerts, quarantine] = await Promise.all([
        getJSON("/api/v1/agents"),
        getJSON("/api/v1/alerts?open=1&limit=200"),
        getJSON("/api/v1/quarantine"),
      ]);
      renderAgents(agents);
      renderAlerts(alerts);
      renderQuarantine(quarantine);
      $("updated").textContent = "updated " + when(agents.now);
      document.body.setAttribute("data-refreshed", agents.now);
      clearError();
    } catch (e) {
      showError(e.message);
    } finally {
      running = false;
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  function refreshNow() {
    if (!running) refresh();
  }

  async function loadSession() {
    try {
      const s = await getJSON("/api/v1/session");
      $("session").textContent = "signed in as " + s.principal + " (" + s.method + ")";
    } catch (_) { /* refresh reports auth errors */ }
  }

  loadSession();
  refresh();
})();
