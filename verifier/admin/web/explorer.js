// Pulse fleet explorer: overview, agent list, agent detail, alerts and
// policy pages over the admin JSON API. Every value from the API is set
// through textContent or setAttribute, never parsed as HTML. Page state
// (filters, sort, cursor, agent) lives in the URL so a view can be shared.
"use strict";

(function () {
  const VERDICTS = ["TRUSTED", "DEGRADED", "UNTRUSTED", "CLOCK_DESYNC", "BLINDED", "UNSPECIFIED"];
  const COLORS = { TRUSTED: "#2e7d32", DEGRADED: "#f9a825", UNTRUSTED: "#c62828", CLOCK_DESYNC: "#6a1b9a", BLINDED: "#37474f", UNSPECIFIED: "#9e9e9e" };
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
  function link(href, text, className) {
    const a = el("a", className, text);
    a.setAttribute("href", href);
    return a;
  }
  function when(t) {
    if (!t) return "";
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function badge(v) {
    const k = VERDICTS.includes(v) ? v : "UNKNOWN";
    return el("span", "badge verdict-" + k, v === "UNSPECIFIED" || !v ? "PENDING" : v);
  }
  function dl(box, pairs) {
    const out = [];
    for (const [k, v, cls] of pairs) {
      out.push(el("dt", null, k));
      const dd = el("dd", cls || null, v === undefined || v === null || v === "" ? "—" : v);
      dd.setAttribute("data-field", k);
      out.push(dd);
    }
    box.replaceChildren(...out);
  }

  class AuthError extends Error {}
  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } }, opts || {}));
    if (r.status === 401 || r.status === 403) throw new AuthError("not authenticated (HTTP " + r.status + "): open the dashboard with ?token= or an operator certificate");
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const err = new Error(path.split("?")[0] + ": HTTP " + r.status + (body && body.error ? ": " + body.error : ""));
      err.status = r.status;
      err.detail = body && body.error;
      throw err;
    }
    return body;
  }
  function post(path, body) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) });
  }
  function showError(msg) { $("error").textContent = msg; $("error").hidden = false; }
  function clearError() { $("error").hidden = true; $("error").textContent = ""; }

  // ------------------------------------------------------------ overview

  let seriesPlot = null;

  function countList(box, counts, href, label) {
    const keys = Object.keys(counts || {}).sort((a, b) => counts[b] - counts[a] || (a < b ? -1 : 1));
    const items = keys.map((k) => {
      const li = el("li");
      const a = link(href(k), label ? label(k) : (k === "" ? "(none)" : k));
      a.setAttribute("data-count-key", k);
      li.appendChild(a);
      li.appendChild(el("span", "num", counts[k]));
      return li;
    });
    if (items.length === 0) items.push(el("li", "empty", "none"));
    box.replaceChildren(...items);
  }

  function renderCounts(c) {
    $("fleet-total").textContent = c.total + " agents";
    const q = (k, v) => "/fleet/agents?" + new URLSearchParams([[k, v]]).toString();
    countList($("by-verdict"), c.by_verdict, (k) => q("verdict", k), (k) => (k === "UNSPECIFIED" ? "PENDING" : k));
    countList($("by-reason"), c.by_reason, (k) => q("reason", k));
    countList($("by-partition"), c.by_partition, (k) => q("partition", k));
    countList($("by-version"), c.by_version, (k) => q("version", k));
    const other = {};
    for (const [k, n] of Object.entries(c.by_trust || {})) other[k] = n;
    other.quarantined = c.quarantined;
    other.open_alerts = c.open_alerts;
    countList($("by-other"), other, (k) => (k === "quarantined" ? q("quarantined", "1") : k === "open_alerts" ? q("open_alerts", "1") : q("trust", k)),
      (k) => ({ tpm: "TPM", "mtls-only": "mTLS-only", quarantined: "quarantined offenders", open_alerts: "with open alerts" }[k] || k));
  }

  async function loadSeries() {
    const w = $("series-window").value;
    const s = await api("/api/v1/fleet/series?window=" + encodeURIComponent(w));
    const names = VERDICTS.filter((v) => s.counts[v]);
    const data = [s.at].concat(names.map((n) => s.counts[n]));
    const box = $("series-chart");
    if (seriesPlot) { seriesPlot.destroy(); seriesPlot = null; }
    box.replaceChildren();
    box.setAttribute("data-points", String(s.at.length));
    box.setAttribute("data-series", names.join(","));
    if (typeof uPlot === "undefined") { box.textContent = "chart library not loaded"; return; }
    const opts = {
      width: Math.max(320, Math.min(1100, box.clientWidth || 900)), height: 260,
      scales: { x: { time: true } },
      axes: [{}, { label: "agents" }],
      series: [{}].concat(names.map((n) => ({ label: n, stroke: COLORS[n], width: 2 }))),
    };
    seriesPlot = new uPlot(opts, data, box);
  }

  // Verifier health: rates between samples of the replica's counters.
  const health = { prev: null, at: [], pulses: [], refused: [], p99: [], plot: null };

  function p99Between(a, b) {
    const n = b.verification_count - a.verification_count;
    if (n <= 0) return null;
    const prev = new Map(a.buckets.map((x) => [x.le, x.count]));
    for (const bk of b.buckets) {
      if (bk.count - (prev.get(bk.le) || 0) >= 0.99 * n) return bk.le * 1000;
    }
    return null;
  }

  async function sampleHealth() {
    const s = await api("/api/v1/health/summary");
    $("health-replicas").textContent = s.replicas ? "(" + s.replicas + " replicas alive)" : "";
    const p = health.prev;
    health.prev = s;
    if (!p) return;
    const dt = (Date.parse(s.now) - Date.parse(p.now)) / 1000;
    if (dt <= 0) return;
    health.at.push(Date.parse(s.now) / 1000);
    health.pulses.push((s.pulses - p.pulses) / dt);
    health.refused.push((s.refused - p.refused) / dt);
    health.p99.push(p99Between(p, s));
    for (const k of ["at", "pulses", "refused", "p99"]) if (health[k].length > 720) health[k].shift();
    const box = $("health-chart");
    box.setAttribute("data-samples", String(health.at.length));
    if (typeof uPlot === "undefined") return;
    const data = [health.at, health.pulses, health.refused, health.p99];
    if (health.plot) { health.plot.setData(data); return; }
    health.plot = new uPlot({
      width: Math.max(320, Math.min(1100, box.clientWidth || 900)), height: 200,
      scales: { x: { time: true }, ms: {} },
      axes: [{}, { label: "per second" }, { scale: "ms", side: 1, label: "p99 ms", grid: { show: false } }],
      series: [{}, { label: "pulses/s", stroke: "#1565c0", width: 2 }, { label: "refused/s", stroke: "#c62828", width: 1 },
        { label: "p99 verification ms", stroke: "#6a1b9a", width: 1, scale: "ms" }],
    }, data, box);
  }

  async function overview() {
    renderCounts(await api("/api/v1/fleet"));
    await loadSeries();
    await sampleHealth();
    setInterval(() => sampleHealth().catch((e) => showError(e.message)), 5000);
  }

  // ------------------------------------------------------------ agent list

  const FILTERS = ["verdict", "reason", "partition", "version", "trust", "quarantined", "open_alerts", "q", "sort", "order", "limit"];

  function listParams() {
    const cur = new URLSearchParams(location.search);
    const p = new URLSearchParams();
    for (const k of FILTERS.concat(["after"])) if (cur.get(k)) p.set(k, cur.get(k));
    if (!p.get("limit")) p.set("limit", "100");
    return p;
  }

  function fillFilterForm(p) {
    const f = $("agent-filter");
    for (const k of FILTERS) {
      const input = f.elements[k];
      if (!input) continue;
      if (input.type === "checkbox") input.checked = p.get(k) === "1";
      else if (p.get(k)) input.value = p.get(k);
    }
  }

  async function agents() {
    const p = listParams();
    fillFilterForm(p);
    const page = await api("/api/v1/agents?" + p.toString());
    const rows = (page.agents || []).map((a) => {
      const tr = el("tr", "row-" + a.verdict);
      tr.setAttribute("data-agent-id", a.id);
      tr.setAttribute("data-verdict", a.verdict);
      const id = cell(tr, null, "mono agent-id");
      id.appendChild(link("/fleet/agent?id=" + encodeURIComponent(a.id), a.id));
      cell(tr, a.partition);
      cell(tr, null).appendChild(badge(a.verdict));
      cell(tr, a.trust === "tpm" ? "TPM" : "mTLS-only");
      cell(tr, a.agent_version || "—", "mono");
      cell(tr, when(a.last_pulse) || "never", "mono");
      cell(tr, a.reason, "mono");
      cell(tr, a.message, "message");
      cell(tr, a.open_alerts, "num" + (a.open_alerts > 0 ? " sev-1" : ""));
      cell(tr, a.address + (a.quarantined ? " (quarantined)" : ""), "mono");
      return tr;
    });
    $("agent-list-rows").replaceChildren(...rows);
    $("agents-total").textContent = page.total + " matching agents" + (p.get("after") ? " (a later page)" : "");
    $("agents-total").setAttribute("data-total", String(page.total));
    const first = new URLSearchParams(p); first.delete("after");
    $("agents-first").setAttribute("href", "/fleet/agents?" + first.toString());
    const next = $("agents-next");
    if (page.next) {
      const n = new URLSearchParams(p); n.set("after", page.next);
      next.setAttribute("href", "/fleet/agents?" + n.toString());
      next.hidden = false;
    } else next.hidden = true;
  }

  function bindFilterForm() {
    $("agent-filter").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = ev.target;
      const p = new URLSearchParams();
      for (const k of FILTERS) {
        const input = f.elements[k];
        if (!input) continue;
        if (input.type === "checkbox") { if (input.checked) p.set(k, "1"); } else if (input.value) p.set(k, input.value.trim());
      }
      if (p.get("sort") === "id") p.delete("sort");
      if (p.get("order") === "asc") p.delete("order");
      location.assign("/fleet/agents?" + p.toString());
    });
  }

  // ------------------------------------------------------------ agent detail

  let timelinePlot = null;

  function ackControl(alertId, done) {
    const wrap = el("span", "ack-box");
    const note = el("input");
    note.setAttribute("placeholder", "note");
    note.setAttribute("maxlength", "1024");
    note.className = "ack-note";
    const b = el("button", "ack", "Acknowledge");
    b.type = "button";
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await post("/api/v1/alerts/" + encodeURIComponent(alertId) + "/ack", { note: note.value });
        clearError();
        wrap.replaceChildren(el("span", "acked", "acknowledged"));
        if (done) done();
      } catch (e) { showError(e.message); b.disabled = false; }
    });
    wrap.append(note, b);
    return wrap;
  }

  function renderEvidence(d) {
    const ev = d.evidence;
    $("evidence-none").hidden = !!ev;
    $("evidence").hidden = !ev;
    $("evidence-at").textContent = d.evidence_at ? "verified, unchanged since " + when(d.evidence_at) : "";
    if (!ev) return;
    const inc = $("evidence-incomplete");
    inc.hidden = d.evidence_complete !== false;
    inc.textContent = d.evidence_complete === false ? "Stored without " + (d.evidence_dropped || "part of it") + " to keep within its bound." : "";
    const boot = ev.boot;
    const sb = $("ev-secureboot");
    if (!boot) sb.textContent = "no verified firmware log";
    else if (boot.secure_boot === null || boot.secure_boot === undefined) sb.textContent = "unknown";
    else sb.textContent = boot.secure_boot ? "enabled" : "disabled";
    sb.setAttribute("data-secure-boot", String(boot ? boot.secure_boot : null));
    $("ev-bank").textContent = boot ? "(" + boot.bank + " bank)" : "";
    const pcrs = boot ? Object.keys(boot.pcrs || {}).sort((a, b) => a - b).map((i) => {
      const tr = el("tr");
      tr.setAttribute("data-pcr", i);
      cell(tr, "PCR " + i);
      cell(tr, boot.pcrs[i], "mono digest");
      return tr;
    }) : [];
    $("ev-pcr-rows").replaceChildren(...pcrs);
    const events = boot && boot.events ? boot.events.filter((e) => e.pcr === 4 || e.pcr === 7 || e.pcr === 0 || /BOOT_SERVICES_APPLICATION|SEPARATOR|ACTION/.test(e.type)) : [];
    $("ev-boot-rows").replaceChildren(...events.slice(0, 200).map((e) => {
      const tr = el("tr");
      cell(tr, e.seq, "num");
      cell(tr, e.pcr, "num");
      cell(tr, e.type, "mono");
      cell(tr, e.digest, "mono digest");
      cell(tr, e.note || "", "message");
      return tr;
    }));
    const rt = ev.runtime;
    if (!rt) {
      dl($("ev-runtime"), [["runtime log", "no verified runtime evidence"]]);
      $("ev-bpf-rows").replaceChildren();
      return;
    }
    const bins = rt.agent_binaries || [];
    const last = bins.length ? bins[bins.length - 1] : null;
    dl($("ev-runtime"), [
      ["agent binary", rt.agent_binary_sha256, "mono digest"],
      ["measured by", last ? (last.self_measured ? "itself (not the launcher)" : "the launcher") : "not recorded"],
      ["earlier builds this boot", bins.length > 1 ? bins.slice(0, -1).map((b) => b.sha256.slice(0, 16)).join(", ") : "none"],
      ["last-known-good binary", rt.previous_agent_binary_sha256 || "—", "mono digest"],
      ["Fortress", rt.fortress_active ? "active" : "not active"],
    ]);
    const progs = Object.keys(rt.bpf_programs || {}).sort();
    $("ev-bpf-rows").replaceChildren(...progs.map((n) => {
      const tr = el("tr");
      tr.setAttribute("data-program", n);
      cell(tr, n, "mono");
      cell(tr, rt.bpf_programs[n], "mono digest");
      cell(tr, (rt.bpf_objects || {})[n] || "", "mono digest");
      return tr;
    }));
  }

  function renderCertificate(c) {
    if (!c) return [["certificate", "not recorded yet (no pulse since the verifier stores it)"]];
    const cls = c.expired ? "mono cert-expired" : c.expires_soon ? "mono cert-soon" : "mono";
    const note = c.expired ? " (expired)" : c.expires_soon ? " (expires within 14 days)" : "";
    return [["certificate subject", c.subject, "mono"], ["certificate expires", when(c.not_after) + note, cls]];
  }

  function yesNo(b) { return b ? "yes" : "no"; }

  function renderKernel(k) {
    $("kernel-none").hidden = !!k;
    $("kernel").hidden = !k;
    if (!k) return;
    const clip = $("kernel-clipped");
    clip.hidden = !k.clipped;
    clip.textContent = k.clipped ? "Stored without " + k.clipped + " to keep within its bound." : "";
    const f = k.fortress;
    dl($("kernel-fortress"), f ? [
      ["active", f.active ? "active" : "not active", f.active ? null : "warn"],
      ["BPF-LSM listed", yesNo(f.lsm_listed)], ["loaded", yesNo(f.loaded)], ["attached", yesNo(f.attached)],
      ["tag", f.tag, "mono"], ["reason", f.reason, "message"],
    ] : [["status", "not reported"]]);
    $("kernel-fortress").setAttribute("data-active", String(!!(f && f.active)));
    const st = k.sentinel;
    dl($("kernel-sentinel"), st ? [
      ["records lost", st.lost, st.lost ? "warn" : null],
      ["configured for the agent", st.config_matches ? "yes" : "no (configured for another process)", st.config_matches ? null : "warn"],
      ["records in the pulse", st.events + (st.truncated ? " (more follow)" : "")], ["error", st.error, st.error ? "warn" : null],
    ] : [["status", "not reported"]]);
    dl($("kernel-host"), [["eBPF programs loaded", k.host_programs], ["quarantined addresses in Shield", k.quarantine_count]]);
    const pins = k.pinned || [];
    $("kernel-pin-rows").replaceChildren(...pins.map((p) => {
      const tr = el("tr", p.problem_kind ? "problem" : null);
      tr.setAttribute("data-program", p.name);
      tr.setAttribute("data-problem", p.problem_kind || "");
      cell(tr, p.name, "mono");
      cell(tr, p.tag, "mono");
      cell(tr, p.insn_sha256 || "", "mono digest");
      cell(tr, p.problem_kind ? p.problem_kind + ": " + (p.problem || "") : "matches what was loaded", p.problem_kind ? "warn" : null);
      return tr;
    }));
    $("kernel-pins-empty").hidden = pins.length > 0;
    const hooks = k.hooks || [];
    $("kernel-hook-rows").replaceChildren(...hooks.map((h) => {
      const tr = el("tr", h.error ? "problem" : null);
      tr.setAttribute("data-hook", h.hook);
      cell(tr, h.hook, "mono");
      cell(tr, h.target, "mono");
      const td = cell(tr, null, "mono");
      if (h.error) td.appendChild(el("span", "warn", "not queried: " + h.error));
      for (const p of h.programs || []) td.appendChild(el("span", "chain", p.name + " (" + p.type + ", tag " + p.tag + (p.link ? "" : ", no link") + ")"));
      if (!h.error && (h.programs || []).length === 0) td.textContent = "nothing attached";
      return tr;
    }));
    $("kernel-hooks-empty").hidden = hooks.length > 0;
  }

  function renderWindows(ws) {
    $("agent-window-rows").replaceChildren(...ws.map((w) => {
      const tr = el("tr", w.open ? "open" : null);
      tr.setAttribute("data-window", w.name);
      cell(tr, w.source === "policy" ? "policy" + (w.where ? " (" + w.where + ")" : "") : "operator" + (w.by ? " (" + w.by + ")" : ""));
      cell(tr, w.name, "mono");
      cell(tr, (w.digests || []).map((d) => d.slice(0, 16)).join(", ") + (w.ebpf_objects ? "; " + w.ebpf_objects + " eBPF objects" : ""), "mono digest");
      cell(tr, when(w.start), "mono");
      cell(tr, when(w.end), "mono");
      cell(tr, w.open ? "open" : "scheduled or ended");
      return tr;
    }));
    $("agent-windows-empty").hidden = ws.length > 0;
  }

  function renderTimeline(hist) {
    const rows = hist.map((h) => {
      const tr = el("tr", "row-" + h.verdict);
      cell(tr, when(h.at), "mono");
      cell(tr, null).appendChild(badge(h.verdict));
      cell(tr, h.reason, "mono");
      cell(tr, h.message, "message");
      return tr;
    });
    $("agent-timeline-rows").replaceChildren(...rows);
    const box = $("agent-timeline-chart");
    if (timelinePlot) { timelinePlot.destroy(); timelinePlot = null; }
    box.replaceChildren();
    if (typeof uPlot === "undefined" || hist.length === 0) return;
    const pts = hist.slice().reverse();
    const xs = pts.map((h) => Date.parse(h.at) / 1000);
    const level = pts.map((h) => ({ TRUSTED: 4, DEGRADED: 3, CLOCK_DESYNC: 2, BLINDED: 1, UNTRUSTED: 0 }[h.verdict] ?? 0));
    timelinePlot = new uPlot({
      width: Math.max(320, Math.min(1100, box.clientWidth || 900)), height: 160, scales: { x: { time: true }, y: { range: [-0.5, 4.5] } },
      axes: [{}, { size: 90, values: (u, ticks) => ticks.map((t) => ["UNTRUSTED", "BLINDED", "DESYNC", "DEGRADED", "TRUSTED"][t] || "") }],
      series: [{}, { label: "verdict", stroke: "#1565c0", width: 2, paths: uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined }],
      cursor: { points: { size: 8 } },
    }, [xs, level], box);
    // A click on the chart selects the change nearest the cursor in the table.
    box.addEventListener("click", () => {
      const i = timelinePlot.cursor.idx;
      if (i === null || i === undefined) return;
      const row = $("agent-timeline-rows").children[hist.length - 1 - i];
      if (row) { row.classList.add("selected"); row.scrollIntoView({ block: "nearest" }); }
    });
  }

  async function agent() {
    const id = new URLSearchParams(location.search).get("id") || "";
    $("agent-id").textContent = id;
    const [resp, alerts] = await Promise.all([
      api("/api/v1/agents/" + encodeURIComponent(id)),
      api("/api/v1/alerts?open=1&limit=200&agent=" + encodeURIComponent(id)),
    ]);
    const d = resp.agent;
    document.title = "Pulse: " + d.id;
    $("agent-verdict").replaceChildren(badge(d.verdict));
    $("agent-verdict").setAttribute("data-verdict", d.verdict);
    $("agent-reason").textContent = d.reason;
    $("agent-message").textContent = d.message;
    $("agent-policy").textContent = d.policy ? "judged by policy " + d.policy + (d.findings_at ? " since " + when(d.findings_at) : "") : "";
    dl($("agent-identity"), [
      ["partition", d.partition], ["trust", d.trust === "tpm" ? "TPM quote" : "mTLS-only"], ["address", d.address, "mono"],
      ["EK SHA-256", d.ek_sha256, "mono digest"], ["AK name", d.ak_name, "mono digest"], ["enrolled", when(d.enrolled_at), "mono"],
      ["agent version (reported)", d.agent_version, "mono"],
      ...renderCertificate(d.certificate),
      ["last pulse", when(d.last_pulse) || "never", "mono"], ["policy digest", d.policy_digest, "mono digest"],
      ["directive stream", d.connected ? "connected" : "not connected"], ["open alerts", d.open_alerts],
    ]);
    const fs = d.findings || [];
    $("agent-findings-rows").replaceChildren(...fs.map((f) => {
      const tr = el("tr", f.enforce ? "enforce" : "warn");
      tr.setAttribute("data-rule", f.rule);
      cell(tr, f.rule, "mono");
      cell(tr, f.file ? f.file + ":" + f.line : "", "mono");
      cell(tr, f.enforce ? "enforce" : "warn");
      cell(tr, f.severity, "num sev-" + Number(f.severity));
      cell(tr, f.expected || "", "mono expected");
      cell(tr, f.seen || "", "mono seen");
      cell(tr, f.message, "message");
      return tr;
    }));
    $("agent-findings-empty").hidden = fs.length > 0;
    renderTimeline(d.history || []);
    renderEvidence(d);
    renderKernel(d.kernel);
    renderWindows(d.update_windows || []);
    const se = d.sentinel_events || [];
    $("agent-sentinel-rows").replaceChildren(...se.map((e) => {
      const tr = el("tr");
      cell(tr, when(e.at), "mono");
      cell(tr, e.kind);
      cell(tr, "pid " + e.sender_pid + " uid " + e.sender_uid + " " + JSON.stringify(e.sender_comm), "mono");
      cell(tr, e.signal || "");
      cell(tr, e.detail || "", "message");
      cell(tr, e.finding || "", "mono");
      return tr;
    }));
    $("agent-sentinel-empty").hidden = se.length > 0;
    const al = alerts.alerts || [];
    $("agent-alert-rows").replaceChildren(...al.map((a) => {
      const tr = el("tr");
      tr.setAttribute("data-alert-id", a.id);
      cell(tr, when(a.created_at), "mono");
      cell(tr, a.kind);
      cell(tr, a.severity, "num sev-" + Number(a.severity));
      cell(tr, a.reason, "mono");
      cell(tr, a.message, "message");
      cell(tr, null).appendChild(ackControl(a.id));
      return tr;
    }));
    $("agent-alerts-empty").hidden = al.length > 0;
    if (!$("agent-actions").hasAttribute("data-bound")) {
      $("agent-actions").setAttribute("data-bound", "1");
      bindActions(d);
    }
  }

  // Operator actions: chosen, then confirmed, then sent; the API records
  // each on the audit log.
  function bindActions(d) {
    const f = $("agent-actions");
    const show = () => {
      const a = f.elements.action.value;
      for (const l of f.querySelectorAll("label[data-for]")) l.hidden = !a || !l.getAttribute("data-for").split(" ").includes(a);
    };
    f.elements.action.addEventListener("change", show);
    show();
    let pending = null;
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const a = f.elements.action.value;
      const id = d.id;
      const enc = encodeURIComponent(id);
      if (a === "approve") {
        const end = f.elements.end.value ? new Date(f.elements.end.value).toISOString() : new Date(Date.now() + 24 * 3600e3).toISOString();
        pending = ["approve binary " + f.elements.digest.value.trim().slice(0, 16) + "… for " + id, () => post("/api/v1/updates", { digest: f.elements.digest.value.trim(), agents: [id], end })];
      } else if (a === "maintenance") {
        pending = ["open a " + f.elements.for.value + " maintenance window for " + id, () => post("/api/v1/agents/" + enc + "/maintenance", { for: f.elements.for.value.trim(), reason: f.elements.reason.value })];
      } else if (a === "release") {
        pending = ["release " + d.address + " from quarantine fleet-wide", () => post("/api/v1/release", { address: d.address })];
      } else if (a === "remove") {
        pending = ["remove " + id + (f.elements.revoke.checked ? " and revoke its ID" : ""), () => post("/api/v1/agents/" + enc + "/remove", { revoke: f.elements.revoke.checked, reason: f.elements.reason.value })];
      } else return;
      $("action-what").textContent = pending[0];
      $("action-confirm").hidden = false;
    });
    $("action-no").addEventListener("click", () => { pending = null; $("action-confirm").hidden = true; });
    $("action-yes").addEventListener("click", async () => {
      if (!pending) return;
      const [what, run] = pending;
      pending = null;
      $("action-confirm").hidden = true;
      try {
        await run();
        $("action-result").textContent = "done: " + what;
        $("action-result").setAttribute("data-result", "ok");
        clearError();
      } catch (e) {
        $("action-result").textContent = "";
        $("action-result").setAttribute("data-result", "error");
        showError(e.message);
      }
    });
  }

  // ------------------------------------------------------------ alerts

  async function alerts() {
    const p = new URLSearchParams(location.search);
    const f = $("alert-filter");
    const open = p.has("open") ? p.get("open") === "1" : true;
    f.elements.open.checked = open;
    for (const k of ["agent", "kind", "severity"]) if (p.get(k)) f.elements[k].value = p.get(k);
    const q = new URLSearchParams({ limit: "1000" });
    if (open) q.set("open", "1");
    if (p.get("agent")) q.set("agent", p.get("agent"));
    const [data, audit] = await Promise.all([api("/api/v1/alerts?" + q.toString()), api("/api/v1/audit/status").catch(() => null)]);
    const as = $("audit-status");
    if (audit && audit.configured) {
      as.textContent = audit.whole ? "Audit log: chain verified up to record " + audit.verified_up_to + " (" + audit.segments + " segment" + (audit.segments === 1 ? "" : "s") + "), last hash " + audit.last_hash
        : "Audit log BROKEN: verified up to record " + audit.verified_up_to + "; " + audit.problem;
      as.className = audit.whole ? "hint" : "warn";
      as.setAttribute("data-whole", String(audit.whole));
    } else as.textContent = "No audit log configured.";
    const kind = (p.get("kind") || "").toLowerCase();
    const sev = Number(p.get("severity") || 0);
    const list = (data.alerts || []).filter((a) => (!kind || a.kind.toLowerCase().includes(kind)) && (!sev || a.severity <= sev));
    $("alert-list-rows").replaceChildren(...list.map((a) => {
      const tr = el("tr");
      tr.setAttribute("data-alert-id", a.id);
      tr.setAttribute("data-agent-id", a.agent_id);
      cell(tr, when(a.created_at), "mono");
      cell(tr, null, "mono").appendChild(link("/fleet/agent?id=" + encodeURIComponent(a.agent_id), a.agent_id));
      cell(tr, a.kind);
      cell(tr, a.severity, "num sev-" + Number(a.severity));
      cell(tr, a.reason, "mono");
      cell(tr, a.message, "message");
      cell(tr, a.acked_at ? when(a.acked_at) + " by " + a.acked_by : "", "mono");
      const c = cell(tr, null);
      if (!a.acked_at) c.appendChild(ackControl(a.id));
      return tr;
    }));
    $("alert-list-empty").hidden = list.length > 0;
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const n = new URLSearchParams();
      n.set("open", f.elements.open.checked ? "1" : "0");
      for (const k of ["agent", "kind", "severity"]) if (f.elements[k].value) n.set(k, f.elements[k].value.trim());
      location.assign("/fleet/alerts?" + n.toString());
    });
  }

  // ------------------------------------------------------------ policy

  async function policyPage() {
    const s = await api("/api/v1/policy");
    dl($("policy-status"), [
      ["digest", s.digest, "mono digest"], ["files", (s.files || []).join(", "), "mono"], ["loaded", when(s.loaded_at), "mono"],
      ["reloads", s.loads], ["status", s.failing ? "FAILING: the files on disk do not load; the policy above stays in force" : "in force, files load"],
      ["refused edits", s.rejected], ["agents no policy selects", s.unselected],
    ]);
    const err = $("policy-error");
    err.hidden = !s.last_error;
    err.textContent = s.last_error ? "Last refused edit (" + when(s.last_rejected_at) + "):\n" + s.last_error : "";
    $("policy-rows").replaceChildren(...(s.policies || []).map((p) => {
      const tr = el("tr");
      tr.setAttribute("data-policy", p.name);
      cell(tr, p.name, "mono");
      cell(tr, p.where, "mono");
      cell(tr, p.tpm);
      cell(tr, p.agents, "num");
      return tr;
    }));
    const form = $("dryrun-form");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const files = [];
      for (const f of Array.from(form.elements.upload.files || [])) files.push({ name: f.name, content: await f.text() });
      if (files.length === 0) files.push({ name: form.elements.name.value.trim(), content: form.elements.content.value });
      $("dryrun-submit").disabled = true;
      $("dryrun-error").hidden = true;
      try {
        const r = await post("/api/v1/policy/dryrun", { files });
        $("dryrun-summary").textContent = "candidate " + r.candidate_digest.slice(0, 12) + " against " + r.evaluated + " agents' stored evidence: " +
          r.changed.length + " would change, " + r.unchanged + " unchanged" + (r.without_evidence ? ", " + r.without_evidence + " without stored evidence" : "") +
          (r.incomplete ? ", " + r.incomplete + " with incomplete boot evidence" : "");
        $("dryrun-summary").setAttribute("data-changed", String(r.changed.length));
        $("dryrun-rows").replaceChildren(...r.changed.map((c) => {
          const tr = el("tr");
          tr.setAttribute("data-agent-id", c.agent_id);
          cell(tr, null, "mono").appendChild(link("/fleet/agent?id=" + encodeURIComponent(c.agent_id), c.agent_id));
          cell(tr, c.partition);
          cell(tr, c.current, "mono");
          cell(tr, c.in_force, "mono");
          cell(tr, c.candidate, "mono");
          cell(tr, c.why + (c.incomplete ? " (boot evidence incomplete)" : ""), "message");
          return tr;
        }));
      } catch (e) {
        $("dryrun-error").textContent = e.detail || e.message;
        $("dryrun-error").hidden = false;
        $("dryrun-summary").textContent = "";
        $("dryrun-summary").setAttribute("data-changed", "error");
      } finally {
        $("dryrun-submit").disabled = false;
      }
    });
  }

  // ------------------------------------------------------------ live

  // Live updates: the state stream sends the agents whose verdict changed
  // (and the fleet counts) only when something changed.
  function live(page) {
    if (typeof EventSource === "undefined") return;
    const es = new EventSource("/api/v1/events", { withCredentials: true });
    es.addEventListener("open", () => { $("live").textContent = "live"; });
    es.addEventListener("error", () => { $("live").textContent = "live updates paused"; });
    es.addEventListener("changes", (ev) => {
      let c;
      try { c = JSON.parse(ev.data); } catch (_) { return; }
      document.body.setAttribute("data-live-seq", String(c.seq));
      $("updated").textContent = "updated " + when(c.now);
      if (page === "overview" && c.counts) renderCounts(c.counts);
      if (page === "agents") {
        for (const a of c.agents || []) {
          const tr = document.querySelector('#agent-list-rows tr[data-agent-id="' + CSS.escape(a.id) + '"]');
          if (!tr) continue;
          tr.className = "row-" + a.verdict + " changed";
          tr.setAttribute("data-verdict", a.verdict);
          tr.children[2].replaceChildren(badge(a.verdict));
          tr.children[6].textContent = a.reason;
        }
      }
      if (page === "agent") {
        const id = new URLSearchParams(location.search).get("id");
        if ((c.agents || []).some((a) => a.id === id)) agent().catch((e) => showError(e.message));
      }
    });
  }

  // ------------------------------------------------------------ main

  const PAGES = { "/fleet": ["overview", overview], "/fleet/agents": ["agents", agents], "/fleet/agent": ["agent", agent],
    "/fleet/alerts": ["alerts", alerts], "/fleet/policy": ["policy", policyPage] };

  async function main() {
    const [name, render] = PAGES[location.pathname] || PAGES["/fleet"];
    $("page-" + name).hidden = false;
    const nav = document.querySelector('[data-nav="' + (name === "agent" ? "agents" : name) + '"]');
    if (nav) nav.classList.add("current");
    if (name === "agents") bindFilterForm();
    if (name === "overview") $("series-window").addEventListener("change", () => loadSeries().catch((e) => showError(e.message)));
    try {
      const s = await api("/api/v1/session");
      $("session").textContent = "signed in as " + s.principal + " (" + s.method + ")";
      await render();
      clearError();
      document.body.setAttribute("data-loaded", name);
      live(name);
    } catch (e) {
      showError(e.message);
      document.body.setAttribute("data-loaded", "error");
    }
  }
  main();
})();
