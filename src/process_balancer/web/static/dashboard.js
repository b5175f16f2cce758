// process-balancer dashboard: live refresh, actions and the throughput charts.
// Every URL is relative to <base href>, so the page works under any mount prefix.
"use strict";

(() => {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const pollMs = Number(body.dataset.pollMs) || 2000;
  const tokenKey = "process-balancer-token@" + new URL(document.baseURI).pathname;
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#0f766e", "#2563eb", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
  const $ = (id) => document.getElementById(id);

  // -- the token lives in this tab's sessionStorage only -------------------------------------

  function storedToken() {
    try { return sessionStorage.getItem(tokenKey) || ""; } catch (e) { return ""; }
  }

  function storeToken(value) {
    try {
      if (value) sessionStorage.setItem(tokenKey, value); else sessionStorage.removeItem(tokenKey);
    } catch (e) { /* storage disabled: the token is asked for again */ }
  }

  function showUnlocked(unlocked) {
    const locked = $("unlock-locked");
    if (!locked) return;
    locked.hidden = unlocked;
    $("unlock-unlocked").hidden = !unlocked;
  }

  // -- messages ------------------------------------------------------------------------------

  function flash(text, kind) {
    const el = $("flash");
    el.textContent = text;
    el.className = "flash" + (kind ? " " + kind : "");
    el.hidden = false;
  }

  function problem(text) {
    const el = $("problem");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function liveState(state, text) {
    $("live-state").dataset.state = state;
    $("live-text").textContent = text;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  // -- live refresh --------------------------------------------------------------------------

  function editing() {
    const active = document.activeElement;
    return !!(active && active.closest && active.closest("#tables") && active.matches("input"));
  }

  function swap(html) {
    $("summary").innerHTML = html.summary;
    if (editing()) return; // keep what the operator is typing; the next refresh catches up
    const open = new Set(
      Array.from(document.querySelectorAll("#tables details[open]"), (d) => d.dataset.key),
    );
    $("tables").innerHTML = html.tables;
    for (const details of document.querySelectorAll("#tables details")) {
      if (open.has(details.dataset.key)) details.open = true;
    }
  }

  let inflight = false;
  let timer = null;

  async function refresh() {
    if (inflight) return;
    inflight = true;
    try {
      const response = await fetch("api/live", {
        headers: { Accept: "application/json" },
        cache: "no-store",
        credentials: "same-origin",
      });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
      swap(data.html);
      drawCharts(data.chart);
      problem(null);
      liveState("live", "live · " + clock(data.generated_at));
    } catch (error) {
      const message = error instanceof TypeError ? "cannot reach the dashboard" : error.message;
      problem(message);
      liveState("error", "not updating");
    } finally {
      inflight = false;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden) await refresh();
      schedule();
    }, pollMs);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });

  // -- actions -------------------------------------------------------------------------------

  async function post(url, fields) {
    try {
      const response = await fetch(url, {
        method: "POST",
        body: fields,
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
        credentials: "same-origin",
      });
      let data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      const message = data && data.message ? data.message : "HTTP " + response.status;
      return { ok: response.ok, status: response.status, message };
    } catch (error) {
      return { ok: false, status: 0, message: "cannot reach the dashboard: " + error.message };
    }
  }

  async function unlock() {
    const input = $("token-input");
    const value = input.value;
    if (!value) {
      flash("enter the dashboard token first", "error");
      return;
    }
    const result = await post("actions/check", new URLSearchParams({ token: value, csrf_token: csrf }));
    if (result.ok) {
      storeToken(value);
      input.value = "";
      showUnlocked(true);
      flash(result.message);
    } else {
      flash(result.message, "error");
    }
  }

  async function act(form) {
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const fields = new URLSearchParams(new FormData(form));
    fields.set("csrf_token", csrf);
    const token = storedToken();
    if (token) fields.set("token", token);
    const buttons = Array.from(form.querySelectorAll("button"));
    buttons.forEach((b) => { b.disabled = true; });
    if (document.activeElement) document.activeElement.blur();
    flash(form.dataset.action + " …", "pending");
    const result = await post(form.getAttribute("action"), fields);
    flash(result.message, result.ok ? "" : "error");
    buttons.forEach((b) => { b.disabled = false; });
    await refresh();
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.id === "unlock") {
      event.preventDefault();
      unlock();
    } else if (form.dataset.action) {
      event.preventDefault();
      act(form);
    }
  });

  const lockButton = $("lock-button");
  if (lockButton) {
    lockButton.addEventListener("click", () => {
      storeToken("");
      showUnlocked(false);
      flash("actions locked in this tab");
    });
  }

  // -- charts --------------------------------------------------------------------------------

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceCeiling(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function compact(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(value >= 1e7 ? 0 : 1) + "M";
    if (value >= 1e3) return (value / 1e3).toFixed(value >= 1e4 ? 0 : 1) + "k";
    return value >= 10 ? String(Math.round(value)) : String(Math.round(value * 10) / 10);
  }

  function drawChart(svg, samples, jobs, which, interval) {
    const width = svg.clientWidth || 600;
    const height = svg.clientHeight || 130;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    const left = 44, right = 10, top = 10, bottom = 20;
    const plotW = width - left - right, plotH = height - top - bottom;
    if (samples.length === 0) {
      svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: "#6b7785", "font-size": 12 },
        `collecting samples (every ${interval} s)…`));
      return;
    }
    const last = samples[samples.length - 1].t;
    const first = Math.min(samples[0].t, last - 10 * interval);
    let max = 0;
    for (const s of samples) for (const job of jobs) max = Math.max(max, (s.jobs[job] || [0, 0])[which]);
    max = niceCeiling(max);
    const x = (t) => left + ((t - first) / (last - first)) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;
    for (const fraction of [0, 0.5, 1]) {
      const value = max * fraction;
      svg.append(el("line", { class: "grid", x1: left, x2: width - right, y1: y(value), y2: y(value) }));
      svg.append(el("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end", fill: "#6b7785", "font-size": 11 }, compact(value)));
    }
    svg.append(el("text", { x: left, y: height - 4, fill: "#6b7785", "font-size": 11 }, clock(first)));
    svg.append(el("text", { x: width - right, y: height - 4, "text-anchor": "end", fill: "#6b7785", "font-size": 11 }, clock(last)));
    jobs.forEach((job, i) => {
      const color = PALETTE[i % PALETTE.length];
      const points = samples.map((s) => [x(s.t), y((s.jobs[job] || [0, 0])[which])]);
      const line = points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
      if (jobs.length === 1 && points.length > 1) {
        const base = y(0).toFixed(1);
        const area = `${points[0][0].toFixed(1)},${base} ${line} ${points[points.length - 1][0].toFixed(1)},${base}`;
        svg.append(el("polygon", { class: "area", points: area, fill: color }));
      }
      svg.append(el("polyline", { class: "series", points: line, stroke: color }));
      if (points.length === 1) svg.append(el("circle", { cx: points[0][0], cy: points[0][1], r: 3, fill: color }));
    });
  }

  function drawCharts(chart) {
    const samples = chart.samples;
    const jobs = Array.from(new Set(samples.flatMap((s) => Object.keys(s.jobs)))).sort();
    drawChart($("chart-iterations"), samples, jobs, 0, chart.interval);
    drawChart($("chart-records"), samples, jobs, 1, chart.interval);
    const latest = samples[samples.length - 1];
    const total = (which) => latest ? Object.values(latest.jobs).reduce((sum, r) => sum + r[which], 0) : null;
    $("now-iterations").textContent = latest ? "now " + compact(total(0)) : "";
    $("now-records").textContent = latest ? "now " + compact(total(1)) : "";
    const legend = $("chart-legend");
    legend.replaceChildren();
    jobs.forEach((job, i) => {
      const item = document.createElement("span");
      const swatch = el("svg", { width: 14, height: 4, class: "swatch" });
      swatch.append(el("rect", { width: 14, height: 4, rx: 2, fill: PALETTE[i % PALETTE.length] }));
      item.append(swatch, document.createTextNode(job));
      legend.append(item);
    });
  }

  // -- start ---------------------------------------------------------------------------------

  showUnlocked(!!storedToken() && !!$("unlock-locked"));
  refresh().then(schedule);
})();
