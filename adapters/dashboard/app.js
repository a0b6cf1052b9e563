// The dashboard: polls /api/status once a second and redraws.  Every name
// (function, client id, handle) is peer-chosen bytes: it only ever goes into
// the page as text (textContent), never as markup.
"use strict";

const POLL_MS = 1000;

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = String(value);
  if (cls) el.className = cls;
  return el;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell);
  return tr;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function note(id, shown, total, what) {
  document.getElementById(id).textContent =
    total > shown ? "(" + shown + " of " + total + " " + what + " shown)" : "(" + total + ")";
}

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}

function progress(job) {
  const td = document.createElement("td");
  if (job.denominator > 0) {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fillEl = document.createElement("span");
    fillEl.style.width = Math.min(100, 100 * job.numerator / job.denominator) + "%";
    bar.appendChild(fillEl);
    td.appendChild(bar);
    td.appendChild(document.createTextNode(" " + job.numerator + "/" + job.denominator));
  } else {
    td.textContent = "-";
  }
  return td;
}

function rates(history, index) {
  // Jobs per second between successive samples of counter `index`.
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i][0] - history[i - 1][0];
    out.push(dt > 0 ? Math.max(0, history[i][index] - history[i - 1][index]) / dt : 0);
  }
  return out;
}

function chart(doc) {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const col = doc.counters;
  const done = rates(doc.history, 1 + col.indexOf("completed"));
  const sub = rates(doc.history, 1 + col.indexOf("submitted"));
  const top = Math.max(1, ...done, ...sub);
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px sans-serif";
  ctx.fillText(top.toFixed(0) + "/s", 2, 12);
  ctx.fillText("0", 2, h - 4);
  const n = Math.max(2, done.length);
  const line = (values, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = pad + (w - pad - 4) * (i + n - values.length) / (n - 1);
      const y = h - 4 - (h - 16) * v / top;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(sub, "#9ca3af");
  line(done, "#2563eb");
}

function render(doc) {
  const s = doc.server;
  document.getElementById("version").textContent = s.version;
  document.getElementById("jobs").textContent = s.jobs;
  document.getElementById("uptime").textContent = duration(s.uptime);
  document.getElementById("lag").textContent = (s.loop_lag * 1000).toFixed(1) + " ms";
  const c = s.connections;
  document.getElementById("connections").textContent = c.worker + " / " + c.client + " / " + c.other;
  let completed = 0, failed = 0;
  for (const f of doc.functions) { completed += f.completed; failed += f.failed + f.exceptions; }
  document.getElementById("completed-total").textContent = completed;
  document.getElementById("failed-total").textContent = failed;

  fill("functions", doc.functions.map((f) => {
    const tr = row([text("td", f.name, "name"), text("td", f.queued[0]), text("td", f.queued[1]),
      text("td", f.queued[2]), text("td", f.scheduled), text("td", f.running),
      text("td", f.workers), text("td", f.submitted), text("td", f.completed),
      text("td", f.failed), text("td", f.exceptions), text("td", f.requeued),
      text("td", f.timed_out)]);
    tr.dataset.function = f.name;
    if (f.workers === 0 && f.queued[0] + f.queued[1] + f.queued[2] > 0) tr.className = "stuck";
    return tr;
  }));
  note("functions-note", doc.functions.length, doc.functions_total, "functions");

  fill("workers", doc.workers.map((w) => row([text("td", w.id), text("td", w.address, "name"),
    text("td", w.client_id, "name"), text("td", w.functions.join(" "), "name"),
    text("td", w.jobs), text("td", w.asleep ? "asleep" : (w.jobs ? "working" : "awake"))])));
  note("workers-note", doc.workers.length, doc.workers_total, "workers");

  fill("running", doc.running.map((j) => row([text("td", j.handle, "name"),
    text("td", j.function, "name"), text("td", j.worker + " " + j.client_id, "name"),
    progress(j)])));
  note("running-note", doc.running.length, doc.running_total, "jobs");
  chart(doc);
}

async function poll() {
  const live = document.getElementById("live");
  try {
    const response = await fetch("api/status", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    live.textContent = "live, " + new Date().toLocaleTimeString();
    live.className = "pill ok";
  } catch (err) {
    live.textContent = "no answer: " + err.message;
    live.className = "pill bad";
  }
  setTimeout(poll, POLL_MS);
}

poll();
