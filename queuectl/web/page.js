"use strict";
/* The queuectl dashboard. Hash routes: #/ (overview), #/jobs?state=S&prefix=P, #/job/ID,
   #/dlq, #/workers. The view on screen refreshes itself every 2 s with fetch; nothing reloads.
   Job text reaches the page only through textContent and text nodes, never as HTML. */

const REFRESH_MS = 2000;
const STATES = ["pending", "processing", "completed", "failed", "dead"];
const ID_PREFIX = /^(?![.-])[A-Za-z0-9_.:@-]{1,128}$/;  // the id alphabet of SPEC
const LOG_KEEP = 256 * 1024;  // characters of log kept on screen while following
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
  const workers = el("div");
  const dead = el("div");
  const node = el("section", {},
    el("h2", { text: "Jobs" }), cards,
    // [queues] the count per queue with its pause and limit goes here (GET /api/queues).
    // [chart] runs per minute over the last hour, succeeded and failed, as an SVG built with
    //         createElementNS, and duration p50/p95 beside it (GET /api/stats).
    el("h2", { text: "Live workers" }), workers, dead);
  return {
    node,
    async refresh() {
      const [data, dlq] = await Promise.all([getJSON("/api/overview"), getJSON("/api/dlq?limit=5")]);
      redraw(dead, dlq.jobs, (jobs) => jobs.length
        ? fragment(el("h2", {}, el("a", { href: "#/dlq", text: "Latest in the dead letter queue" })), deadTable(jobs))
        : fragment());
      redraw(cards, data, () => el("div", { class: "cards" },
        ...STATES.map((state) => card(state, data[state])), card("total", data.total)));
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
  let prefix = params.get("prefix") || "";
  const search = el("input", { type: "search", placeholder: "id prefix", "aria-label": "Search by id prefix", id: "search" });
  search.value = prefix;
  const tabs = el("div", { class: "tabs" }, ...["", ...STATES].map((s) =>
    el("a", { href: "#/jobs" + (s ? "?state=" + s : ""), class: s === state ? "active" : "", text: s || "all" })));
  const list = pager((after) => {
    const query = new URLSearchParams({ limit: "50" });
    if (state) query.set("state", state);
    if (prefix) query.set("prefix", prefix);
    if (after) query.set("after", after);
    return getJSON("/api/jobs?" + query);
  }, jobsTable);
  search.addEventListener("input", () => {
    const typed = search.value.trim();
    if (typed && !ID_PREFIX.test(typed)) { setStatus("Not an id prefix: ids use A-Z a-z 0-9 _ . - : @", true); return; }
    prefix = typed;
    const query = new URLSearchParams();
    if (state) query.set("state", state);
    if (prefix) query.set("prefix", prefix);
    history.replaceState(null, "", "#/jobs" + (query.toString() ? "?" + query : ""));
    list.reset();
    refresh();
  });
  const node = el("section", {}, el("h2", { text: "Jobs" + (state ? ": " + state : "") }),
    el("div", { class: "tools" }, tabs, search), list.node);
  return { node, refresh: () => list.refresh() };
}

function dlqView() {
  const list = pager((after) => getJSON("/api/dlq?limit=50" + (after ? "&after=" + encodeURIComponent(after) : "")), deadTable);
  const node = el("section", {}, el("h2", { text: "Dead letter queue" }), list.node);
  return { node, refresh: () => list.refresh() };
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
  const heading = el("h2", { text: "Job " + id });
  let logTo = null;  // the byte offset the log on screen ends at
  let gone = false;
  const node = el("section", {}, heading, actions, fields,
    // [runs] the job's runs (attempt, worker, outcome, duration, error) go here, from job.runs.
    el("h2", { text: "Log" }), log);
  const names = ["id", "state", "command", "attempts", "max_retries", "priority", "timeout", "run_at",
    "cwd", "created_at", "updated_at", "exit_code", "last_error"];

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
        el("dd", { class: name === "state" ? "state " + job.state : "", text: job[name] === null ? "–" : String(job[name]) })])));
      // [actions] Cancel (pending, failed, processing) and Requeue (completed, dead) join these.
      redraw(actions, [job.state, session.readOnly], () => fragment(
        ...[retryButton(job), deleteButton(job, () => { location.hash = "#/jobs"; })].filter(Boolean)));
      await followLog();
    },
  };
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
