"use strict";
/* The queuectl dashboard. Hash routes: #/ (overview), #/jobs?state=S&queue=Q&prefix=P,
   #/job/ID, #/dlq, #/queues, #/workers. The view on screen refreshes itself every 2 s with fetch; nothing reloads.
   Job text reaches the page only through textContent and text nodes, never as HTML. */

const REFRESH_MS = 2000;
const STATES = ["pending", "processing", "completed", "failed", "dead"];
const ID_PREFIX = /^(?![.-])[A-Za-z0-9_.:@-]{1,128}$/;  // the id alphabet of SPEC
const LOG_KEEP = 256 * 1024;  // characters of log kept on screen while following
const SVG = "http://www.w3.org/2000/svg";
const session = { csrf: "", readOnly: true };
let current = null;  // the view on screen: { node, refresh() }
let refreshing = false;
let again = false;

// -- helpers -------------------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/* Redraws `node` from `data` only when the data changed: rows under the pointer stay put. */
function redraw(node, data, render) {
  const signature = JSON.stringify(data);
  if (node.dataset.signature === signature) return;
  node.dataset.signature = signature;
  node.replaceChildren(render(data));
}

function fragment(...nodes) {
  const holder = document.createDocumentFragment();
  holder.append(...nodes);
  return holder;
}

function jobLink(id) {
  return el("a", { href: "#/job/" + encodeURIComponent(id), text: id });
}

function shortTime(iso) {
  return iso ? iso.slice(0, 19).replace("T", " ") : "–";
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
  return body;
}

async function postAction(path) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": session.csrf },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
  return body;
}

/* A button that asks first, then POSTs; none is made on a read-only dashboard. */
function actionButton(label, question, path, className, done) {
  if (session.readOnly) return null;
  const button = el("button", { type: "button", class: className || "", text: label });
  button.addEventListener("click", async () => {
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      await postAction(path);
      setStatus(label + ": done");
      if (done) done();  // it moves to another view, which refreshes itself
      else refresh();
    } catch (error) {
      setStatus(label + " failed: " + error.message, true);
      button.disabled = false;
    }
  });
  return button;
}

function retryButton(job) {
  return job.state === "dead"
    ? actionButton("Retry", "Move job " + job.id + " back to pending?", "/api/jobs/" + encodeURIComponent(job.id) + "/retry", "primary")
    : null;
}

function jobAction(job, action, label, question, className) {
  return actionButton(label, question + " job " + job.id + "?", "/api/jobs/" + encodeURIComponent(job.id) + "/" + action, className);
}

/* The buttons a job's state allows, as the CLI allows them. */
function jobButtons(job, deleted) {
  const waiting = ["pending", "failed", "processing"].includes(job.state);
  return [
    retryButton(job),
    job.state === "completed" || job.state === "dead" ? jobAction(job, "requeue", "Requeue", "Run again (back to pending)") : null,
    waiting ? jobAction(job, "cancel", "Cancel", job.state === "processing" ? "Stop the run of" : "Cancel") : null,
    deleteButton(job, deleted),
  ].filter(Boolean);
}

function deleteButton(job, done) {
  return job.state === "processing" ? null
    : actionButton("Delete", "Delete job " + job.id + " and its log?", "/api/jobs/" + encodeURIComponent(job.id) + "/delete", "danger", done);
}

// -- refreshing ----------------------------------------------------------------------------------

async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  const view = current;
  try {
    await view.refresh();
    if (view === current) setStatus("Updated " + new Date().toISOString().slice(11, 19) + " UTC" + (session.readOnly ? " · read-only" : ""));
  } catch (error) {
    if (view === current) setStatus("Refresh failed: " + error.message, true);
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}

function show(view, name) {
  current = view;
  document.getElementById("view").replaceChildren(view.node);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  refresh();
}

function route() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "jobs") show(jobsView(params), "jobs");
  else if (parts[0] === "job" && parts[1]) show(jobView(decodeURIComponent(parts[1])), "jobs");
  else if (parts[0] === "dlq") show(dlqView(), "dlq");
  else if (parts[0] === "workers") show(workersView(), "workers");
  else if (parts[0] === "queues") show(queuesView(), "queues");
  else show(overviewView(), "overview");
}

// -- tables --------------------------------------------------------------------------------------

function table(headers, rows, emptyText) {
  if (!rows.length) return el("p", { class: "empty", text: emptyText });
  const head = el("tr", {}, ...headers.map(([label, cls]) => el("th", { class: cls || "", text: label })));
  return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function cell(text, cls) {
  return el("td", { class: cls || "", text: text === null || text === undefined ? "–" : String(text) });
}

function workersTable(workers) {
  const rows = workers.map((w) => el("tr", {},
    cell(w.pid, "num"), cell(w.pool), cell(w.host, "hide-narrow"),
    el("td", {}, w.job ? jobLink(w.job) : "idle"),
    cell(w.job ? shortTime(w.job_since) : "–", "hide-narrow"), cell(shortTime(w.started_at), "hide-narrow")));
  return table([["PID"], ["pool"], ["host", "hide-narrow"], ["job"], ["since", "hide-narrow"], ["started", "hide-narrow"]],
    rows, "No live workers.");
}

function jobsTable(jobs) {
  const rows = jobs.map((job) => el("tr", {},
    el("td", {}, jobLink(job.id)), el("td", { class: "state " + job.state, text: job.state }),
    cell(job.attempts + "/" + (job.max_retries + 1), "num"), cell(job.priority, "num hide-narrow"),
    cell(job.command, "command"), cell(shortTime(job.updated_at), "hide-narrow")));
  return table([["id"], ["state"], ["runs"], ["priority", "hide-narrow"], ["command"], ["updated", "hide-narrow"]],
    rows, "No jobs here.");
}

function deadTable(jobs) {
  const rows = jobs.map((job) => el("tr", { "data-job": job.id },
    el("td", {}, jobLink(job.id)), cell(job.command, "command"), cell(job.attempts, "num"),
    cell(job.last_error, "error"), cell(shortTime(job.updated_at), "hide-narrow"),
    el("td", { class: "actions" }, retryButton(job), " ", deleteButton(job))));
  return table([["id"], ["command"], ["runs"], ["last error"], ["died", "hide-narrow"], [""]],
    rows, "The dead letter queue is empty.");
}

function runsTable(runs) {
  const rows = runs.map((run) => el("tr", {},
    cell(run.attempt, "num"), cell(run.outcome, "state " + (run.outcome === "completed" ? "completed" : "dead")),
    cell(run.exit_code, "num"), cell(duration(run), "num"), cell(shortTime(run.started_at), "hide-narrow"),
    cell(run.worker, "hide-narrow"), cell(run.host, "hide-narrow"), cell(run.error, "error")));
  return table([["attempt"], ["outcome"], ["exit"], ["took"], ["started", "hide-narrow"], ["worker", "hide-narrow"],
    ["host", "hide-narrow"], ["error"]], rows, "No runs yet.");
}

function duration(run) {
  const seconds = (Date.parse(run.ended_at) - Date.parse(run.started_at)) / 1000;
  return Number.isFinite(seconds) ? human(seconds) : "–";
}

function human(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return Math.round(seconds * 1000) + " ms";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
  const minutes = Math.floor(seconds / 60);
  return minutes < 60 ? minutes + "m " + String(Math.round(seconds % 60)).padStart(2, "0") + "s"
    : Math.floor(minutes / 60) + "h " + String(minutes % 60).padStart(2, "0") + "m";
}

function pausedText(queue) {
  return queue.paused ? "paused" : "running";
}

/* Every queue with its count per state, limit and pause; with buttons unless `buttons` is false. */
function queuesTable(data, buttons) {
  const rows = data.queues.map((queue) => el("tr", { "data-queue": queue.name },
    el("td", {}, el("a", { href: "#/jobs?queue=" + encodeURIComponent(queue.name), text: queue.name })),
    ...STATES.map((state) => cell(queue.counts[state], "num")),
    cell(queue.limit === null ? "none" : queue.limit, "num"),
    el("td", { class: queue.paused ? "state failed" : "" , text: pausedText(queue) }),
    buttons ? el("td", { class: "actions" }, queue.paused
      ? actionButton("Resume", "Resume queue " + queue.name + "?", "/api/queues/" + encodeURIComponent(queue.name) + "/resume")
      : actionButton("Pause", "Pause queue " + queue.name + "? Runs in progress finish.", "/api/queues/" + encodeURIComponent(queue.name) + "/pause", "danger"))
      : null));
  return table([["queue"], ...STATES.map((s) => [s, "num"]), ["limit"], ["state"],
    ...(buttons ? [[""]] : [])], rows, "No queues yet: a queue exists while it has jobs or settings.");
}

function pausesLine(paused) {
  if (paused.all) return "Paused: every queue" + (paused.resumed.length ? " except " + paused.resumed.join(", ") : "") + ".";
  if (paused.queues.length) return "Paused: " + paused.queues.join(", ") + ".";
  return "Nothing is paused.";
}

/* Runs per minute over the last hour as stacked SVG bars: succeeded below, failed above. */
function runsChart(data) {
  const width = 900, height = 150, top = 14, bottom = 18, left = 30;
  const bar = (width - left) / data.minutes.length;
  const most = Math.max(1, ...data.minutes.map((m) => m.succeeded + m.failed));
  const scale = (n) => (n / most) * (height - top - bottom);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("id", "chart");
  svg.setAttribute("aria-label", "Runs per minute over the last hour, succeeded and failed");
  const node = (tag, attributes, text) => {
    const made = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, String(value));
    if (text !== undefined) made.textContent = text;
    svg.append(made);
    return made;
  };
  node("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" });
  node("text", { x: left - 4, y: top + 4, "text-anchor": "end", class: "tick" }, String(most));
  node("text", { x: left - 4, y: height - bottom, "text-anchor": "end", class: "tick" }, "0");
  node("text", { x: left, y: height - 4, class: "tick" }, "−60 min");
  node("text", { x: width, y: height - 4, "text-anchor": "end", class: "tick" }, "now");
  data.minutes.forEach((minute, index) => {
    const x = left + index * bar + 0.5;
    const ok = scale(minute.succeeded), bad = scale(minute.failed);
    const base = height - bottom;
    const tip = minute.minute.slice(11, 16) + " UTC: " + minute.succeeded + " succeeded, " + minute.failed + " failed";
    if (ok) node("rect", { x, y: base - ok, width: bar - 1, height: ok, class: "ok" }).append(titled(tip));
    if (bad) node("rect", { x, y: base - ok - bad, width: bar - 1, height: bad, class: "bad" }).append(titled(tip));
  });
  return svg;
}

function titled(text) {
  const title = document.createElementNS(SVG, "title");
  title.textContent = text;
  return title;
}

/* A paged list: remembers the cursor of every page seen, so Previous goes back exactly. */
function pager(fetchPage, render) {
  const body = el("div");
  const previous = el("button", { type: "button", text: "← Previous" });
  const next = el("button", { type: "button", text: "Next →" });
  const where = el("span");
  const cursors = [""];
  let following = null;
  previous.addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); refresh(); } });
  next.addEventListener("click", () => { if (following) { cursors.push(following); refresh(); } });
  const buttons = el("span", { class: "pager" }, previous, next);
  return {
    node: el("div", {}, body, el("div", { class: "pager" }, buttons, where)),
    reset() { cursors.length = 1; },
    async refresh() {
      const page = await fetchPage(cursors[cursors.length - 1]);
      following = page.next;
      redraw(body, page.jobs, render);
      previous.disabled = cursors.length === 1;
      next.disabled = !page.next;
      buttons.hidden = previous.disabled && next.disabled;  // one page: nothing to turn
      const total = page.total === null ? "" : " · " + page.total + " job" + (page.total === 1 ? "" : "s");
      where.textContent = "page " + cursors.length + total;
    },
  };
}

// -- views ---------------------------------------------------------------------------------------

function overviewView() {
  const cards = el("div");
  const queues = el("div");
  const chart = el("div");
  const figures = el("p", { class: "figures", id: "durations" });
  const workers = el("div");
  const dead = el("div");
  const node = el("section", {},
    el("h2", { text: "Jobs" }), cards,
    el("h2", {}, el("a", { href: "#/queues", text: "Queues" })), queues,
    el("h2", { text: "Runs per minute, last hour" }), chart, figures,
    el("h2", { text: "Live workers" }), workers, dead);
  return {
    node,
    async refresh() {
      const [data, dlq, queueData, stats, perMinute] = await Promise.all([getJSON("/api/overview"),
        getJSON("/api/dlq?limit=5"), getJSON("/api/queues"), getJSON("/api/stats"), getJSON("/api/runs-per-minute")]);
      redraw(dead, dlq.jobs, (jobs) => jobs.length
        ? fragment(el("h2", {}, el("a", { href: "#/dlq", text: "Latest in the dead letter queue" })), deadTable(jobs))
        : fragment());
      redraw(cards, data, () => el("div", { class: "cards" },
        ...STATES.map((state) => card(state, data[state])), card("total", data.total)));
      redraw(queues, queueData, () => fragment(queuesTable(queueData, false), el("p", { class: "empty", text: pausesLine(queueData.paused) })));
      redraw(chart, perMinute.minutes, () => fragment(runsChart(perMinute),
        el("p", { class: "legend" }, el("span", { class: "swatch ok" }), " succeeded ", el("span", { class: "swatch bad" }), " failed (failed, timeout, lost)")));
      const d = stats.runs.duration_seconds;
      figures.textContent = stats.runs.total + " run" + (stats.runs.total === 1 ? "" : "s") + " in the last hour · duration p50 "
        + human(d.p50) + ", p95 " + human(d.p95) + ", max " + human(d.max);
      redraw(workers, data.workers, workersTable);
    },
  };
}

function card(state, count) {
  const href = state === "total" ? "#/jobs" : "#/jobs?state=" + state;
  return el("a", { class: "card " + state, href, id: "count-" + state },
    el("span", { class: "n", text: String(count) }), el("span", { class: "label", text: state }));
}

function jobsView(params) {
  const state = STATES.includes(params.get("state")) ? params.get("state") : "";
  const queue = ID_PREFIX.test(params.get("queue") || "") ? params.get("queue") : "";
  let prefix = params.get("prefix") || "";
  const search = el("input", { type: "search", placeholder: "id prefix", "aria-label": "Search by id prefix", id: "search" });
  search.value = prefix;
  const choose = el("select", { "aria-label": "Queue", id: "queue-filter" }, el("option", { value: "", text: "every queue" }));
  if (queue) choose.append(el("option", { value: queue, text: queue }));
  choose.value = queue;
  const hash = (s, q, p) => {
    const query = new URLSearchParams();
    if (s) query.set("state", s);
    if (q) query.set("queue", q);
    if (p) query.set("prefix", p);
    return "#/jobs" + (query.toString() ? "?" + query : "");
  };
  const tabs = el("div", { class: "tabs" }, ...["", ...STATES].map((s) =>
    el("a", { href: hash(s, queue, ""), class: s === state ? "active" : "", text: s || "all" })));
  const list = pager((after) => {
    const query = new URLSearchParams({ limit: "50" });
    if (state) query.set("state", state);
    if (queue) query.set("queue", queue);
    if (prefix) query.set("prefix", prefix);
    if (after) query.set("after", after);
    return getJSON("/api/jobs?" + query);
  }, jobsTable);
  search.addEventListener("input", () => {
    const typed = search.value.trim();
    if (typed && !ID_PREFIX.test(typed)) { setStatus("Not an id prefix: ids use A-Z a-z 0-9 _ . - : @", true); return; }
    prefix = typed;
    history.replaceState(null, "", hash(state, queue, prefix));
    list.reset();
    refresh();
  });
  choose.addEventListener("change", () => { location.hash = hash(state, choose.value, prefix); });
  let named = false;
  const node = el("section", {}, el("h2", { text: "Jobs" + (state ? ": " + state : "") + (queue ? " in queue " + queue : "") }),
    el("div", { class: "tools" }, tabs, choose, search), list.node);
  return {
    node,
    async refresh() {
      if (!named) {  // the queues to choose from, once
        named = true;
        const found = await getJSON("/api/queues");
        for (const q of found.queues) if (q.name !== queue) choose.append(el("option", { value: q.name, text: q.name }));
      }
      await list.refresh();
    },
  };
}

function dlqView() {
  const list = pager((after) => getJSON("/api/dlq?limit=50" + (after ? "&after=" + encodeURIComponent(after) : "")), deadTable);
  const node = el("section", {}, el("h2", { text: "Dead letter queue" }), list.node);
  return { node, refresh: () => list.refresh() };
}

function queuesView() {
  const body = el("div");
  const pauses = el("p", { id: "pauses" });
  const every = el("div", { class: "tools" });
  const name = el("input", { type: "text", placeholder: "queue", "aria-label": "Queue name", id: "limit-queue" });
  const value = el("input", { type: "number", min: "0", step: "1", placeholder: "N (0: none)", "aria-label": "Limit", id: "limit-value" });
  const set = el("button", { type: "button", id: "limit-set", text: "Set limit" });
  set.addEventListener("click", async () => {
    const queue = name.value.trim(), n = value.value.trim();
    if (!ID_PREFIX.test(queue) || !/^[0-9]{1,7}$/.test(n)) { setStatus("Give a queue name and a whole number", true); return; }
    if (!window.confirm(n === "0" ? "Remove the limit of queue " + queue + "?" : "Run at most " + n + " jobs of queue " + queue + " at once?")) return;
    try {
      await postAction("/api/queues/" + encodeURIComponent(queue) + "/limit?value=" + n);
      setStatus("Limit set");
      refresh();
    } catch (error) {
      setStatus("Set limit failed: " + error.message, true);
    }
  });
  const limitForm = session.readOnly ? null : el("div", { class: "tools" }, el("span", { text: "At most" }), value,
    el("span", { text: "jobs at once of queue" }), name, set);
  const node = el("section", {}, el("h2", { text: "Queues" }), pauses, every, body, limitForm);
  return {
    node,
    async refresh() {
      const data = await getJSON("/api/queues");
      pauses.textContent = pausesLine(data.paused);
      redraw(every, [data.paused, session.readOnly], () => fragment(...[
        actionButton("Pause every queue", "Pause every queue, including queues to come? Runs in progress finish.", "/api/pause", "danger"),
        data.paused.all || data.paused.queues.length ? actionButton("Resume every queue", "Lift every pause?", "/api/resume", "primary") : null,
      ].filter(Boolean)));
      redraw(body, data, () => queuesTable(data, !session.readOnly));
    },
  };
}

function workersView() {
  const body = el("div");
  return {
    node: el("section", {}, el("h2", { text: "Live workers" }), body),
    async refresh() { redraw(body, await getJSON("/api/workers"), workersTable); },
  };
}

function jobView(id) {
  const fields = el("dl", { class: "fields" });
  const actions = el("div", { class: "tools" });
  const log = el("pre", { class: "log", id: "log" });
  const runs = el("div", { id: "runs" });
  const heading = el("h2", { text: "Job " + id });
  let logTo = null;  // the byte offset the log on screen ends at
  let gone = false;
  const node = el("section", {}, heading, actions, fields,
    el("h2", { text: "Runs" }), runs, el("h2", { text: "Log" }), log);
  const names = ["id", "state", "command", "attempts", "max_retries", "priority", "timeout", "run_at",
    "queue", "after", "cwd", "created_at", "updated_at", "exit_code", "last_error", "log"];

  async function followLog() {
    const piece = await getJSON("/api/jobs/" + encodeURIComponent(id) + "/log" + (logTo === null ? "" : "?from=" + logTo));
    if (logTo !== null && piece.from !== logTo) log.textContent = "";  // the log was replaced
    if (piece.text) log.append(piece.text);
    if (log.textContent.length > LOG_KEEP) log.textContent = log.textContent.slice(-LOG_KEEP);
    logTo = piece.to;
  }

  return {
    node,
    async refresh() {
      if (gone) return;
      let job;
      try {
        job = await getJSON("/api/jobs/" + encodeURIComponent(id));
      } catch (error) {
        if (!String(error.message).startsWith("no job")) throw error;
        gone = true;
        node.replaceChildren(heading, el("p", { class: "empty", text: "This job no longer exists." }));
        return;
      }
      redraw(fields, job, () => fragment(...names.flatMap((name) => [el("dt", { text: name }),
        el("dd", { class: name === "state" ? "state " + job.state : "", text: fieldText(job[name]) })])));
      redraw(actions, [job.state, session.readOnly], () => fragment(
        ...jobButtons(job, () => { location.hash = "#/jobs"; })));
      redraw(runs, job.runs, runsTable);
      await followLog();
    },
  };
}

function fieldText(value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "–";
  return String(value);
}

// -- start ---------------------------------------------------------------------------------------

async function start() {
  try {
    const info = await getJSON("/api/session");
    session.csrf = info.csrf;
    session.readOnly = info.read_only;
  } catch (error) {
    setStatus("Cannot reach the dashboard: " + error.message, true);
  }
  window.addEventListener("hashchange", route);
  route();
  setInterval(refresh, REFRESH_MS);
}

start();
