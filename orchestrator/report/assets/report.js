"use strict";
(function () {
  const data = JSON.parse(document.getElementById("timeline-data").textContent);
  const F = data.fields.length, A = data.attempts, nRows = data.jobs.length, nBars = A.length / F;
  const col = {};
  data.fields.forEach((name, i) => { col[name] = i; });
  // Attempts arrive sorted by row: rowStart[r]..rowStart[r + 1] are row r's.
  const rowStart = new Int32Array(nRows + 1);
  for (let i = 0; i < nBars; i++) rowStart[A[i * F + col.row] + 1]++;
  for (let r = 0; r < nRows; r++) rowStart[r + 1] += rowStart[r];

  const root = document.getElementById("timeline");
  const scroll = document.getElementById("tl-scroll");
  const canvas = document.getElementById("tl-canvas");
  const axis = document.getElementById("tl-axis");
  const spacer = document.getElementById("tl-spacer");
  const tip = document.getElementById("tl-tip");
  const overview = document.getElementById("tl-overview");
  const overviewImage = document.createElement("canvas");
  root.dataset.rows = String(nRows);
  root.dataset.bars = String(nBars);

  const rowH = nRows <= 60 ? 20 : nRows <= 600 ? 12 : nRows <= 3000 ? 6 : 4;
  const labelW = rowH >= 12 ? 150 : 0;
  const colors = { succeeded: "#16a34a", retried: "#f59e0b", failed: "#dc2626", cancelled: "#6b7280",
                   unfinished: "#7c3aed" };
  const end = data.end > 0 ? data.end : 1;
  let width = 300, viewH = 40, highlight = -1, pending = false, overviewH = 0;
  let t0 = 0, t1 = end, zoom = false;  // the time shown; "zoom" fits it to the rows in view

  const X = (t) => labelW + ((t - t0) / (t1 - t0)) * (width - labelW - 10);
  const XO = (t) => labelW + (t / end) * (width - labelW - 10);
  const secs = (s) => (s < 10 ? s.toFixed(3) : s.toFixed(1)) + " s";

  function fit(c, w, h) {
    const dpr = window.devicePixelRatio || 1;
    c.width = Math.max(1, Math.round(w * dpr));
    c.height = Math.max(1, Math.round(h * dpr));
    c.style.width = w + "px";
    c.style.height = h + "px";
    c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function ticks() {
    const raw = (t1 - t0) / Math.max(2, Math.floor((width - labelW) / 90));
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
    const out = [];
    for (let k = Math.ceil(t0 / step - 1e-9); k * step <= t1 + step * 1e-6; k++) out.push(k * step);
    return out;
  }

  function fitTime(first, last) {
    t0 = 0; t1 = end;
    if (!zoom) return;
    let lo = Infinity, hi = -Infinity;
    for (let i = rowStart[first]; i < rowStart[last + 1]; i++) {
      const o = i * F;
      lo = Math.min(lo, A[o + col.start]);
      hi = Math.max(hi, A[o + col.end] + Math.max(0, A[o + col.delay]));
    }
    if (hi > lo) { const pad = (hi - lo) * 0.02; t0 = Math.max(0, lo - pad); t1 = Math.min(end, hi + pad); }
  }

  function layout() {
    viewH = nRows === 0 ? 30 : Math.min(nRows * rowH, Math.max(180, Math.round(window.innerHeight * 0.6)));
    scroll.style.height = viewH + "px";
    spacer.style.height = Math.max(0, nRows * rowH - viewH) + "px";
    width = scroll.clientWidth || root.clientWidth || 300;
    fit(canvas, width, viewH);
    fit(axis, width, 22);
    // The overview squeezes every job into a strip (many jobs per pixel row) when they do not fit.
    overviewH = nRows * rowH > viewH ? Math.min(140, nRows) : 0;
    overview.hidden = overviewH === 0;
    if (overviewH) {
      fit(overview, width, overviewH);
      fit(overviewImage, width, overviewH);
      paintOverview(overviewImage.getContext("2d"));
    }
    draw();
  }

  function paintOverview(ctx) {
    ctx.fillStyle = "#f8fafc";
    ctx.fillRect(0, 0, width, overviewH);
    ctx.fillStyle = "#64748b";
    ctx.font = "11px system-ui, sans-serif";
    if (labelW) ctx.fillText("all " + nRows + " jobs", 4, 12);
    const perPx = nRows / overviewH;
    ctx.globalAlpha = Math.max(0.25, Math.min(1, 2 / perPx));
    // Successes first, so that failures and retries drawn after them stay visible.
    for (const pass of [0, 1]) {
      for (let i = 0; i < nBars; i++) {
        const o = i * F, outcome = A[o + col.outcome];
        if ((outcome === 0) !== (pass === 0)) continue;
        const x0 = XO(A[o + col.start]);
        ctx.fillStyle = colors[data.outcomes[outcome]];
        ctx.fillRect(x0, Math.floor(A[o + col.row] / perPx), Math.max(1, XO(A[o + col.end]) - x0), 1);
      }
      ctx.globalAlpha = 1;
    }
  }

  function drawOverview() {
    if (!overviewH) return;
    const ctx = overview.getContext("2d");
    ctx.clearRect(0, 0, width, overviewH);
    ctx.drawImage(overviewImage, 0, 0, width, overviewH);
    const perPx = nRows / overviewH, top = scroll.scrollTop / rowH / perPx;
    ctx.strokeStyle = "#0f172a";
    const left = zoom ? XO(t0) : 0, right = zoom ? XO(t1) : width - 1;
    ctx.strokeRect(Math.floor(left) + 0.5, Math.floor(top) + 0.5, Math.max(2, right - left),
                   Math.max(2, viewH / rowH / perPx));
  }

  function drawAxis(marks) {
    const ctx = axis.getContext("2d");
    ctx.clearRect(0, 0, width, 22);
    ctx.fillStyle = "#64748b";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    if (labelW) ctx.fillText("job", 4, 11);
    for (const t of marks) {
      const x = X(t);
      ctx.fillRect(x, 16, 1, 6);
      ctx.textAlign = x < labelW + 20 ? "left" : "center";
      ctx.fillText(+t.toPrecision(6) + "s", x, 9);
    }
    ctx.textAlign = "left";
  }

  function draw() {
    pending = false;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, viewH);
    const top = scroll.scrollTop;
    const first = Math.max(0, Math.floor(top / rowH));
    const last = Math.min(nRows - 1, Math.floor((top + viewH) / rowH));
    if (nRows) fitTime(first, last);
    const marks = ticks();
    ctx.fillStyle = "#eef2f7";
    for (const t of marks) ctx.fillRect(X(t), 0, 1, viewH);
    const bh = rowH >= 8 ? rowH - 4 : rowH - 1;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    let drawn = 0;
    for (let r = first; r <= last; r++) {
      const y = r * rowH - top;
      if (r === highlight) { ctx.fillStyle = "#fde68a"; ctx.fillRect(0, y, width, rowH); }
      else if (rowH >= 12 && r % 2) { ctx.fillStyle = "rgba(148,163,184,0.08)"; ctx.fillRect(0, y, width, rowH); }
      for (let i = rowStart[r]; i < rowStart[r + 1]; i++) {
        const o = i * F;
        const x0 = X(A[o + col.start]), x1 = Math.max(X(A[o + col.end]), x0 + 1);
        const fo = A[o + col.first_output];
        const xf = fo >= 0 ? Math.min(Math.max(X(fo), x0), x1) : x0;
        ctx.fillStyle = colors[data.outcomes[A[o + col.outcome]]];
        ctx.globalAlpha = 0.35;
        ctx.fillRect(x0, y + (rowH - bh) / 2, xf - x0, bh);
        ctx.globalAlpha = 1;
        ctx.fillRect(xf, y + (rowH - bh) / 2, x1 - xf, bh);
        const d = A[o + col.delay];
        if (d > 0) {
          ctx.fillStyle = "#94a3b8";
          ctx.fillRect(x1, y + rowH / 2 - 1, Math.max(1, X(A[o + col.end] + d) - x1), rowH >= 8 ? 2 : 1);
        }
        drawn++;
      }
    }
    if (labelW) {  // after the bars, so that a zoomed bar starting off the left edge hides no label
      for (let r = first; r <= last; r++) {
        const y = r * rowH - top, name = data.jobs[r];
        ctx.fillStyle = r === highlight ? "#fde68a" : "#ffffff";
        ctx.fillRect(0, y, labelW, rowH);
        ctx.fillStyle = "#334155";
        ctx.fillText(name.length > 22 ? name.slice(0, 21) + "…" : name, 4, y + rowH / 2);
      }
    }
    ctx.strokeStyle = "#64748b";
    ctx.setLineDash([4, 3]);
    for (const run of data.runs) {
      if (run.offset <= t0 || run.offset >= t1) continue;
      ctx.beginPath(); ctx.moveTo(X(run.offset) + 0.5, 0); ctx.lineTo(X(run.offset) + 0.5, viewH); ctx.stroke();
    }
    ctx.setLineDash([]);
    root.dataset.drawnBars = String(drawn);
    drawAxis(marks);
    drawOverview();
  }

  // A tooltip is lines of plain text, the job id in bold: shown with textContent, never as markup.
  function attemptTip(r, o) {
    const start = A[o + col.start], stop = A[o + col.end], fo = A[o + col.first_output];
    const cost = A[o + col.cost], err = A[o + col.error];
    const lines = [
      data.outcomes[A[o + col.outcome]] + " · " + secs(stop - start) + " (" + secs(start) + " → " + secs(stop) + ")",
      "ttft " + (fo >= 0 ? secs(fo - start) : "–") + " · tokens " + A[o + col.tokens_in] + " in / " +
        A[o + col.tokens_out] + " out · cost " + (cost >= 0 ? "$" + cost.toFixed(6) : "?"),
    ];
    if (err >= 0) lines.push(data.errors[err]);
    if (data.inputs && data.inputs[r]) lines.push(data.inputs[r]);
    if (A[o + col.delay] > 0) lines.push("then backoff " + secs(A[o + col.delay]));
    return { job: data.jobs[r], rest: " · attempt " + A[o + col.attempt] +
      (data.runs.length > 1 ? " · run " + A[o + col.run] : ""), lines };
  }

  function hit(ev) {
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left, r = Math.floor((ev.clientY - rect.top + scroll.scrollTop) / rowH);
    if (r < 0 || r >= nRows) return null;
    for (let i = rowStart[r]; i < rowStart[r + 1]; i++) {
      const o = i * F, x0 = X(A[o + col.start]), x1 = Math.max(X(A[o + col.end]), x0 + 1);
      if (x >= x0 - 2 && x <= x1 + 2) return attemptTip(r, o);
      const d = A[o + col.delay];
      if (d > 0 && x > x1 && x <= X(A[o + col.end] + d) + 2) {
        return { job: data.jobs[r], rest: " · backoff " + secs(d) + " after attempt " + A[o + col.attempt],
                 lines: A[o + col.error] >= 0 ? [data.errors[A[o + col.error]]] : [] };
      }
    }
    return { job: data.jobs[r], rest: " · " + data.status[r] + " · " + (rowStart[r + 1] - rowStart[r]) +
      " attempt(s)", lines: [] };
  }

  function showTip(found) {
    const bold = document.createElement("b");
    bold.textContent = found.job;
    tip.replaceChildren(bold, document.createTextNode(found.rest));
    for (const line of found.lines) tip.append(document.createElement("br"), document.createTextNode(line));
  }

  canvas.addEventListener("mousemove", (ev) => {
    const found = hit(ev);
    if (found === null) { tip.hidden = true; return; }
    showTip(found);
    tip.hidden = false;
    const left = Math.min(ev.clientX + 14, document.documentElement.clientWidth - tip.offsetWidth - 8);
    tip.style.left = Math.max(4, left) + "px";
    tip.style.top = (ev.clientY + 16) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  // A click on a job's row opens its answer in the answers list (answers.js listens).
  canvas.addEventListener("click", (ev) => {
    const rect = canvas.getBoundingClientRect();
    const r = Math.floor((ev.clientY - rect.top + scroll.scrollTop) / rowH);
    if (r >= 0 && r < nRows) document.dispatchEvent(new CustomEvent("orchestrator-open-job", { detail: data.jobs[r] }));
  });
  scroll.addEventListener("scroll", () => {
    if (!pending) { pending = true; window.requestAnimationFrame(draw); }
  }, { passive: true });
  window.addEventListener("resize", layout);
  function jumpFromOverview(ev) {
    const rect = overview.getBoundingClientRect();
    const row = ((ev.clientY - rect.top) / overviewH) * nRows;
    scroll.scrollTop = row * rowH - viewH / 2;
  }
  overview.addEventListener("mousedown", (ev) => { jumpFromOverview(ev); });
  overview.addEventListener("mousemove", (ev) => { if (ev.buttons & 1) jumpFromOverview(ev); });
  document.getElementById("zoom").addEventListener("change", (ev) => { zoom = ev.target.checked; draw(); });
  document.getElementById("find-job").addEventListener("change", (ev) => {
    const want = ev.target.value.trim();
    let r = data.jobs.indexOf(want);
    if (r < 0 && want) r = data.jobs.findIndex((j) => j.includes(want));
    highlight = r;
    if (r >= 0) scroll.scrollTop = r * rowH - viewH / 2 + rowH / 2;
    draw();
  });

  // Where a bar is on screen (client coordinates) once scrolled into view: for tests and scripts.
  window.orchestratorTimeline = {
    rows: nRows,
    bars: nBars,
    barCenter(r, k) {
      const o = (rowStart[r] + k) * F;
      scroll.scrollTop = Math.max(0, r * rowH - viewH / 2);
      draw();
      const rect = canvas.getBoundingClientRect();
      const x0 = X(A[o + col.start]), x1 = Math.max(X(A[o + col.end]), x0 + 1);
      return { x: rect.left + (x0 + x1) / 2, y: rect.top + r * rowH - scroll.scrollTop + rowH / 2 };
    },
  };

  layout();
  document.body.dataset.ready = "1";
})();
