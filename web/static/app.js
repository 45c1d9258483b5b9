// monitor-scheduler pages: plain JavaScript, no build step. The pages work without it (forms post
// and redirect); with it, times show in the browser's zone and the settings page saves, runs and
// refreshes its status in place through the JSON API (session cookie + X-CSRF-Token header).
"use strict";

const TIME_FORMAT = {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
};
const MIN_INTERVAL = 1;
const MAX_INTERVAL = 1440;
const POLL_MS = 3000;

function localTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, TIME_FORMAT);
}

function localiseTimes(root) {
  root.querySelectorAll("time.local-time").forEach((el) => {
    el.title = el.textContent;
    el.textContent = localTime(el.getAttribute("datetime"));
  });
}

// Builds <time> the way the server renders it; text only, never HTML from data.
function timeElement(iso) {
  if (!iso) return document.createTextNode("—");
  const el = document.createElement("time");
  el.className = "local-time";
  el.setAttribute("datetime", iso);
  el.textContent = localTime(iso);
  return el;
}

function pill(label) {
  const el = document.createElement("span");
  el.className = "pill pill-" + label.replace(/ /g, "-");
  el.textContent = label;
  return el;
}

function replaceContent(el, ...nodes) {
  if (!el) return;
  el.replaceChildren(...nodes);
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json", "X-CSRF-Token": document.body.dataset.csrf || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* non-JSON error page */ }
  return { status: response.status, ok: response.ok, data };
}

function validateInterval(text) {
  const value = text.trim();
  if (!/^\d+$/.test(value)) return `Enter a whole number of minutes between ${MIN_INTERVAL} and ${MAX_INTERVAL}.`;
  const minutes = Number(value);
  if (minutes < MIN_INTERVAL || minutes > MAX_INTERVAL) return `The interval must be between ${MIN_INTERVAL} and ${MAX_INTERVAL} minutes.`;
  return null;
}

function settingsPage(page) {
  const form = document.getElementById("schedule-form");
  const input = document.getElementById("interval");
  const enabled = document.getElementById("enabled");
  const errorEl = document.getElementById("interval-error");
  const savedNote = document.getElementById("saved-note");
  const runForm = document.getElementById("run-form");
  const runButton = document.getElementById("run-now");
  let lastStatus = null;

  function showError(message) {
    errorEl.textContent = message || "";
    errorEl.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  }

  function statusLabel(s) {
    if (s.running) return s.state === "queued" ? "queued" : "running";
    if (s.paused) return "paused";
    return s.lastStatus || "never run";
  }

  // Paused after failed slots: the banner (rendered by the server, hidden while not paused) with
  // since when and why, filled as text.
  function renderPaused(s) {
    const banner = document.getElementById("paused-banner");
    if (!banner) return;
    banner.hidden = !s.paused;
    replaceContent(document.getElementById("paused-since"), timeElement(s.pausedAt));
    replaceContent(document.getElementById("paused-reason"), document.createTextNode(s.pausedReason || ""));
    replaceContent(document.getElementById("failed-slots"), document.createTextNode(String(s.failedSlots)));
  }

  // The run's progress, as the server renders it (_macros.html run_progress): hidden while idle,
  // "Waiting in the queue…" while queued, a bar and the task's message while running.
  function renderProgress(s) {
    const box = document.getElementById("progress");
    if (!box) return;
    const bar = document.getElementById("progress-bar");
    const percent = document.getElementById("progress-percent");
    const message = document.getElementById("progress-message");
    const idle = document.getElementById("progress-idle");
    box.dataset.state = s.state;
    box.hidden = s.state === "idle";
    if (idle) idle.hidden = s.state !== "idle";
    const running = s.state === "running";
    bar.hidden = !running;
    if (running && s.progress !== null) {
      bar.value = s.progress;
      bar.textContent = percent.textContent = `${Math.round(s.progress * 100)} %`;
    } else {
      bar.removeAttribute("value");  // indeterminate until the task reports a fraction
      bar.textContent = percent.textContent = "";
    }
    message.textContent = s.state === "queued" ? "Waiting in the queue…" : running ? (s.progressMessage || "Running…") : "";
  }

  function renderSchedule(s) {
    lastStatus = statusLabel(s);
    // The server's "queued for a worker" note (a form post without this script) holds only while
    // the run waits: drop it once a worker has started the run or it finished (settings.html does too).
    const note = document.getElementById("flash");
    if (note && note.dataset.kind === "queued" && s.state !== "queued") note.remove();
    replaceContent(document.getElementById("status"), pill(lastStatus));
    renderProgress(s);
    renderPaused(s);
    // While a run holds the lease, nextRunAt is only the lease's expiry; the run's finish sets the next slot.
    const next = !s.enabled ? document.createTextNode("— (disabled)")
      : s.paused ? document.createTextNode("— (paused)")
      : s.running ? document.createTextNode("after the current run") : timeElement(s.nextRunAt);
    replaceContent(document.getElementById("next-run"), next);
    replaceContent(document.getElementById("last-run"), timeElement(s.lastRunAt));
    const lastError = document.getElementById("last-error");
    replaceContent(lastError, document.createTextNode(s.lastError || "—"));
    if (lastError) lastError.classList.toggle("error-text", Boolean(s.lastError));
    if (runButton) {
      runButton.disabled = s.running;
      runButton.textContent = s.running ? "Run in progress…" : "Run now";
    }
  }

  function renderRuns(runs) {
    const tbody = document.querySelector("#runs tbody");
    if (!tbody) return;
    const rows = runs.map((run) => {
      const tr = document.createElement("tr");
      const cells = [
        timeElement(run.finishedAt),
        document.createTextNode(run.trigger),
        document.createTextNode(String(run.attempt)),
        pill(run.status),
        document.createTextNode(run.durationMs === null ? "—" : `${run.durationMs} ms`),
        document.createTextNode(run.progressMessage || ""),
        document.createTextNode(run.error || ""),
        resultElement(run),
      ];
      const classes = { 2: "attempt", 5: "progress-message", 6: "error-text", 7: "result" };
      cells.forEach((node, i) => {
        const td = document.createElement("td");
        if (classes[i]) td.className = classes[i];
        td.appendChild(node);
        tr.appendChild(td);
      });
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 8;
      td.textContent = "No runs yet.";
      tr.appendChild(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  // A run's result as the server renders it: the JSON indented (keys sorted), or the note; as text.
  function sortedKeys(value) {
    if (Array.isArray(value)) return value.map(sortedKeys);
    if (value === null || typeof value !== "object") return value;
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sortedKeys(value[key])]));
  }

  function resultElement(run) {
    const text = run.resultNote !== null && run.resultNote !== undefined ? run.resultNote
      : run.result === null || run.result === undefined ? "" : JSON.stringify(sortedKeys(run.result), null, 2);
    if (!text) return document.createTextNode("");
    const pre = document.createElement("pre");
    pre.textContent = text;
    return pre;
  }

  async function refresh() {
    const [mine, runs] = await Promise.all([api("GET", "/api/schedules/me"), api("GET", "/api/schedules/me/runs")]);
    if (mine.ok) renderSchedule(mine.data);
    if (runs.ok) renderRuns(runs.data);
  }

  // Calendar schedules: the preview comes from the server (GET /api/schedules/me/preview), so
  // the page and the scheduler never disagree about DST or the expression's meaning.
  const cronInput = document.getElementById("cron");
  const zoneInput = document.getElementById("time-zone");
  const spreadInput = document.getElementById("spread");
  const cronError = document.getElementById("cron-error");
  const preview = document.getElementById("preview");
  const isCron = () => document.getElementById("kind-cron").checked;
  let previewTimer = null;
  let previewSeq = 0;

  function showCronError(message) {
    cronError.textContent = message || "";
    cronError.hidden = !message;
  }

  function renderPreview(slots) {
    const nodes = [document.createTextNode(slots.length ? "Next runs: " : "")];
    slots.forEach((slot, i) => {
      const el = document.createElement("time");
      el.dateTime = slot.at;
      el.textContent = slot.label;
      el.title = slot.local;
      nodes.push(el);
      if (i < slots.length - 1) nodes.push(document.createTextNode(", "));
    });
    preview.replaceChildren(...nodes);
  }

  async function updatePreview() {
    const seq = ++previewSeq;
    const params = isCron()
      ? new URLSearchParams({ cron: cronInput.value.trim(), timeZone: zoneInput.value.trim() || "UTC" })
      : new URLSearchParams({ interval: input.value.trim() });
    if (isCron() && !cronInput.value.trim()) { showCronError(null); renderPreview([]); return; }
    if (!isCron() && validateInterval(input.value)) { renderPreview([]); return; }
    const result = await api("GET", `/api/schedules/me/preview?${params}`);
    if (seq !== previewSeq) return;  // a newer keystroke's answer wins
    if (result.ok) { if (isCron()) showCronError(null); renderPreview(result.data.slots); }
    else { renderPreview([]); if (isCron()) showCronError(result.data ? result.data.message : "No preview."); }
  }

  function previewSoon() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(() => updatePreview().catch(() => {}), 250);
  }

  function showKind() {
    document.getElementById("interval-fields").hidden = isCron();
    document.getElementById("calendar-fields").hidden = !isCron();
    previewSoon();
  }

  document.getElementById("kind-interval").addEventListener("change", showKind);
  document.getElementById("kind-cron").addEventListener("change", showKind);
  [cronInput, zoneInput].forEach((el) => el.addEventListener("input", previewSoon));

  function requestBody() {
    if (!isCron()) return { enabled: enabled.checked, kind: "interval", intervalMinutes: Number(input.value.trim()) };
    const spread = Number(spreadInput.value.trim() || "0");
    return { enabled: enabled.checked, cron: cronInput.value.trim(), timeZone: zoneInput.value.trim() || "UTC",
             spreadSeconds: Number.isInteger(spread) ? spread * 60 : -1 };
  }

  // The page validates first; the server validates again and its message is shown the same way.
  form.noValidate = true;
  input.addEventListener("input", () => { showError(validateInterval(input.value)); previewSoon(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    savedNote.textContent = "";
    if (!isCron()) {
      const problem = validateInterval(input.value);
      if (problem) { showError(problem); input.focus(); return; }
    }
    showError(null);
    showCronError(null);
    const result = await api("PATCH", "/api/schedules/me", requestBody());
    if (result.ok) {
      if (page.dataset.hasSchedule !== "yes") { window.location.reload(); return; }
      renderSchedule(result.data);
      renderPreview([]);
      updatePreview().catch(() => {});
      savedNote.textContent = "Saved.";
    } else if (result.status === 422 || result.status === 400) {
      const message = result.data ? result.data.message : "Not saved.";
      if (isCron()) showCronError(message); else showError(message);
    } else {
      savedNote.textContent = (result.data && result.data.message) || `Not saved (HTTP ${result.status}).`;
    }
  });

  const resumeForm = document.getElementById("resume-form");
  if (resumeForm) {
    resumeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = await api("POST", "/api/schedules/me/resume");
      if (result.ok) {
        renderSchedule(result.data);
        savedNote.textContent = "Resumed.";
      } else {
        savedNote.textContent = (result.data && result.data.message) || `Not resumed (HTTP ${result.status}).`;
      }
      await refresh();
    });
  }

  if (runForm) {
    runForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      runButton.disabled = true;
      runButton.textContent = "Run in progress…";
      const result = await api("POST", "/api/schedules/me/run");
      if (result.ok) {
        renderSchedule(result.data.schedule);
      } else if (result.status === 409) {
        savedNote.textContent = (result.data && result.data.message) || "A run is already in progress.";
      } else {
        savedNote.textContent = (result.data && result.data.message) || `Could not start the run (HTTP ${result.status}).`;
      }
      await refresh();
    });
    // Keeps status, progress, next run and history current while a worker or the dispatcher runs.
    setInterval(() => { if (!document.hidden) refresh().catch(() => {}); }, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localiseTimes(document);
  const page = document.getElementById("settings-page");
  if (page) settingsPage(page);
  const unlock = document.getElementById("unlock");
  if (unlock) {
    unlock.form.addEventListener("submit", (event) => {
      if (!window.confirm("Release every expired lease? Their runs are recorded as lost and the users are due again.")) event.preventDefault();
    });
  }
});
