// jobqueue web monitor: vanilla JS over the REST API. No build step.
"use strict";

const STATUSES = ["pending", "queued", "running", "paused", "completed", "failed", "cancelled"];
// How the page offers each action. Which ones a job accepts is the server's call (each
// job's `allowed_actions`); this only says how a button looks and what it sends.
const ACTIONS = {
  "force-start": { label: "Start now" },
  "release": { label: "Release" },
  "pause": { label: "Pause" },
  "resume": { label: "Resume" },
  "cancel": { label: "Cancel", danger: true },
  "mark-failed": { label: "Mark failed", danger: true },
  "retry": { label: "Retry from checkpoint" },
};
// `patch` (change priority or pool) is a PATCH of the job with a form, not a button.
const NOT_BUTTONS = new Set(["patch"]);
const PENDING_WORD = { pause: "pausing…", cancel: "cancelling…", fail: "failing…" };
const REFRESH_MS = 2000;
const MAX_BACKOFF_MS = 30000;
// A poll waits for its answer before the next one starts, so a request that hangs
// must fail rather than stop the page.
const GET_TIMEOUT_MS = 20000;
// The server keeps each job's newest JOBQUEUE_METRICS_MAX_POINTS points (default 5000);
// a chart holding more would show points the server no longer has.
const MAX_POINTS = 5000;
const STOP = Symbol("stop polling");

const view = document.getElementById("view");
let routeToken = 0;
let polling = null; // the current view's poller, stopped on navigation

// -- talking to the API ---------------------------------------------------------------

function token() { return localStorage.getItem("jobqueue.token") || ""; }

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const init = { method, headers };
  // Only reads time out: a POST cut short may still have been carried out.
  if (method === "GET") init.signal = AbortSignal.timeout(GET_TIMEOUT_MS);
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401) {
    await login();
    return api(method, path, body);
  }
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || response.statusText);
    error.status = response.status;
    error.body = data;
    throw error;
  }
  return { status: response.status, data };
}

function login() {
  const dialog = document.getElementById("login");
  const form = document.getElementById("login-form");
  const input = document.getElementById("login-token");
  if (dialog.open) return new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  document.getElementById("login-error").textContent = token() ? "That token was not accepted." : "";
  input.value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    form.addEventListener("submit", () => {
      localStorage.setItem("jobqueue.token", input.value.trim());
      resolve();
    }, { once: true });
    // Escape closes the dialog without a token: ask again rather than hang.
    dialog.addEventListener("cancel", (event) => event.preventDefault());
  });
}

// -- small helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function ago(iso) {
  const date = new Date(iso);
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 0) return date.toLocaleString();
  return (seconds < 60 ? `${seconds}s` : seconds < 3600 ? `${Math.round(seconds / 60)}m`
    : seconds < 86400 ? `${Math.round(seconds / 3600)}h` : `${Math.round(seconds / 86400)}d`) + " ago";
}

function when(iso) {
  if (!iso) return "–";
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, ago(iso));
}

// Times rendered once (the job page's events) still say how long ago on each poll.
function retime(root) {
  for (const node of root.querySelectorAll("time[datetime]")) node.textContent = ago(node.getAttribute("datetime"));
}

function badge(job) {
  const word = job.requested_action ? PENDING_WORD[job.requested_action] : job.status;
  return h("span", { class: `badge ${job.status}`, "data-testid": "job-status", "data-status": job.status }, word);
}

function progressBar(progress) {
  const fraction = progress && typeof progress.fraction === "number" ? progress.fraction : null;
  const pct = fraction === null ? 0 : Math.round(fraction * 100);
  return h("div", { class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
    h("div", { class: "fill", style: `width:${pct}%` }),
    h("span", {}, fraction === null ? "" : `${pct}%`));
}

// Polls the view of route `mine`: load() fetches, show(answer) renders, fail(error) shows a
// failure (return STOP from either to stop, e.g. on a 404). The next run is due REFRESH_MS
// after one ends, only while that route is current. One run at a time: the job page asks
// for what follows what it holds, so two runs at once would both append the same lines; a
// run asked for meanwhile (now(), e.g. after an action) starts as soon as the current ends.
// Failures back off (2 s, 4 s, … up to MAX_BACKOFF_MS) so a down API is not hammered.
function poll(mine, load, show, fail) {
  let timer = null, running = false, again = false, failures = 0;
  const current = () => mine === routeToken;
  async function run() {
    clearTimeout(timer);
    if (!current()) return;
    if (running) { again = true; return; }
    running = true;
    let outcome;
    try {
      const answer = await load();
      if (current()) outcome = show(answer);
      failures = 0;
    } catch (error) {
      failures += 1;
      if (current()) outcome = fail(error);
    }
    running = false;
    if (!current() || outcome === STOP) return;
    if (again) { again = false; run(); return; }
    timer = setTimeout(run, Math.min(REFRESH_MS * 2 ** failures, MAX_BACKOFF_MS));
  }
  polling = { stop: () => clearTimeout(timer) };
  run();
  return { now: run };
}

function showError(where, error) {
  where.replaceChildren(h("p", { class: "error", "data-testid": "error" }, error.message));
}

// -- views --------------------------------------------------------------------------

const filters = { statuses: new Set(), q: "" };

function jobsView(mine) {
  const filterKey = () => JSON.stringify([[...filters.statuses].sort(), filters.q]);
  const controls = h("div", { class: "filters" },
    ...STATUSES.map((s) => h("label", { class: `chip ${s}` },
      h("input", { type: "checkbox", value: s, checked: filters.statuses.has(s),
        onchange: (e) => { e.target.checked ? filters.statuses.add(s) : filters.statuses.delete(s); poller.now(); } }), s)),
    h("input", { type: "search", placeholder: "name contains…", value: filters.q, "aria-label": "search by name",
      oninput: (e) => { filters.q = e.target.value; poller.now(); } }));
  const table = h("div", { class: "table" });
  view.replaceChildren(h("h1", {}, "Jobs"), controls, table);

  async function load() {
    const key = filterKey();
    const params = new URLSearchParams({ limit: "100" });
    for (const s of filters.statuses) params.append("status", s);
    if (filters.q) params.set("q", filters.q);
    const { data } = await api("GET", "/api/training?" + params);
    return { key, data };
  }
  function show({ key, data }) {
    // The filters changed while this was in flight: the run queued behind it shows them.
    if (key !== filterKey()) return;
    table.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Status", "Progress", "Queue", "Pool", "Team", "Owner", "GPUs", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.items.length ? data.items.map((job) => h("tr", { "data-job": job.id },
        h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.name)),
        h("td", {}, badge(job)),
        h("td", {}, progressBar(job.progress)),
        h("td", { title: job.waiting_reason || "" }, queuePlace(job, "")),
        h("td", {}, job.pool), h("td", { "data-testid": "job-team" }, job.team), h("td", {}, job.owner),
        h("td", {}, job.gpus), h("td", {}, when(job.created_at))))
        : h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No jobs match.")))));
  }
  const poller = poll(mine, load, show, (error) => showError(table, error));
}

function chart(points) {
  const keys = [...new Set(points.flatMap((p) => Object.keys(p.metrics).filter((k) => typeof p.metrics[k] === "number")))];
  if (!points.length || !keys.length) return h("p", { class: "muted" }, "No metrics reported yet.");
  const width = 560, height = 160, pad = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("data-testid", "metrics-chart");
  svg.setAttribute("data-points", points.length);
  const colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
  const xs = points.map((p, i) => (typeof p.step === "number" ? p.step : i));
  const xmin = Math.min(...xs), xmax = Math.max(...xs) || 1;
  const legend = h("div", { class: "legend" });
  keys.slice(0, colours.length).forEach((key, k) => {
    const ys = points.map((p) => p.metrics[key]).filter((v) => typeof v === "number");
    const ymin = Math.min(...ys), ymax = Math.max(...ys);
    const sx = (x) => pad + ((x - xmin) / ((xmax - xmin) || 1)) * (width - 2 * pad);
    const sy = (y) => height - pad - ((y - ymin) / ((ymax - ymin) || 1)) * (height - 2 * pad);
    const d = points.map((p, i) => [xs[i], p.metrics[key]]).filter(([, y]) => typeof y === "number")
      .map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d);
    path.setAttribute("stroke", colours[k]);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke-width", "2");
    svg.append(path);
    const last = ys[ys.length - 1];
    legend.append(h("span", { style: `color:${colours[k]}` }, `${key}: ${Number(last.toPrecision(4))} (min ${Number(ymin.toPrecision(4))})`));
  });
  return h("div", {}, svg, legend);
}

// The buttons are the job's allowed_actions, as the server lists them.
function recoveryCard(job, error, act) {
  const message = h("p", { class: "error", "data-testid": "action-error" }, error);
  // A second cancel of a job already being cancelled kills it at once.
  const killing = job.requested_action === "cancel";
  const buttons = job.allowed_actions.filter((name) => !NOT_BUTTONS.has(name)).map((name) => {
    const look = ACTIONS[name] || { label: name }; // an action this page does not know yet
    return h("button", { "data-action": name, class: look.danger ? "danger" : "",
      onclick: () => {
        let body = {};
        if (name === "mark-failed") {
          const reason = window.prompt("Why did it fail?");
          if (!reason) return;
          body = { reason };
        }
        if (name === "cancel" && killing) body = { force: true };
        message.textContent = "";
        act(name, body, message);
      } }, name === "cancel" && killing ? "Kill now" : look.label);
  });
  return h("section", { class: "card recovery", "data-testid": "recovery" }, h("h2", {}, "Recovery"),
    buttons.length ? h("div", { class: "buttons" }, buttons)
      : h("p", { class: "muted" }, job.status === "completed" ? "Nothing to do: the job has completed." : "Nothing to do now."),
    message);
}

// "#12" when exact; "~#12,300" when only estimated (far back in a deep queue).
function queuePlace(job, none) {
  if (job.queue_position) return `#${job.queue_position}`;
  if (job.queue_position_estimate) return `~#${job.queue_position_estimate.toLocaleString("en")}`;
  return none;
}

function jobFacts(job) {
  const facts = [
    ["Kind", job.kind], ["Pool", job.pool], ["Team", job.team], ["Owner", job.owner], ["GPUs", job.gpus],
    ["Time limit", job.max_runtime_seconds ? `${job.max_runtime_seconds} s` : "none"], ["Priority", job.priority + (job.forced ? " (forced)" : "")],
    ["Queue position", queuePlace(job, "–")],
    ["Waiting", job.waiting_reason || "–"],
    ["Expected start", job.expected_start_at ? when(job.expected_start_at) : "–"],
    ["Preemptible", job.preemptible ? `yes (preempted ${job.preempted} times)` : "no"],
    ["Attempt", `${job.attempt} of ${job.max_attempts}`], ["Interruptions", `${job.interruptions} of ${job.max_interruptions}`],
    ["Worker", job.worker ? `${job.worker.name} on GPUs [${job.worker.gpu_ids.join(", ")}]` : "–"],
    ["Checkpoint", job.checkpoint ? `${job.checkpoint.uri} (step ${job.checkpoint.step ?? "?"})` : "none"],
    ["Created", when(job.created_at)], ["Started", when(job.started_at)], ["Finished", when(job.finished_at)],
  ];
  if (job.termination_reason) {
    facts.push(["Ended by", job.termination_reason + (job.exit_code !== null ? ` (exit code ${job.exit_code})` : "")
      + (job.signal !== null ? ` (signal ${job.signal})` : "")]);
  }
  if (job.error_message) facts.push(["Error", job.error_message]);
  return facts;
}

function eventItem(e) {
  return h("li", { "data-event": e.id }, when(e.at), " ", h("b", {}, e.action), ` ${e.from_status || "–"} → ${e.to_status} by ${e.actor}`,
    e.reason ? h("span", { class: "muted" }, ` — ${e.reason}`) : "");
}

// The job page keeps the events, metric points and log lines it has, and each poll asks
// only for those after the last it holds (the job itself is small: fetched whole). A
// navigation to another job runs this again, starting from nothing.
function jobView(mine, id) {
  const top = h("div", {});
  const chartBox = h("section", { class: "card" }, h("h2", {}, "Metrics"), chart([]));
  const eventList = h("ol", { class: "events", "data-testid": "events" });
  const events = h("section", { class: "card" }, h("h2", {}, "Events"), eventList);
  const logBox = h("pre", { class: "logs", "data-testid": "logs" });
  const logs = h("section", { class: "card wide" }, h("h2", {}, "Log"), logBox);
  view.replaceChildren(h("p", {}, h("a", { href: "#/jobs" }, "← all jobs")), top, h("div", { class: "grid" }, chartBox, events), logs);

  let lastEvent = 0; // id of the newest event held
  let points = []; // oldest first, at most MAX_POINTS
  let nextLine = 0; // what logs?after= takes next
  let actionError = ""; // an action's refusal stays on screen until the next action

  async function act(name, body, message) {
    try {
      await api("POST", `/api/training/${id}/${name}`, body);
      actionError = "";
    } catch (error) {
      actionError = message.textContent = error.message;
    }
    poller.now(); // either way the page is out of date
  }

  function load() {
    const base = `/api/training/${id}`;
    // Holding no point yet, ask for the newest; after that, for those that follow.
    const metrics = points.length ? `after=${points[points.length - 1].n}` : `limit=${MAX_POINTS}`;
    return Promise.all([api("GET", base), api("GET", `${base}/events?after=${lastEvent}`),
      api("GET", `${base}/metrics?${metrics}`), api("GET", `${base}/logs?after=${nextLine}`)]);
  }

  function show([{ data: job }, { data: ev }, { data: m }, { data: log }]) {
    top.replaceChildren(
      h("h1", {}, job.name, " ", badge(job)),
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Progress"), progressBar(job.progress),
          h("p", { class: "muted", "data-testid": "progress-message" }, (job.progress && job.progress.message) || ""),
          h("dl", { class: "facts" }, jobFacts(job).map(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, v)]))),
        recoveryCard(job, actionError, act)),
      job.log_tail && job.log_tail.length && job.termination_reason
        ? h("section", { class: "card wide" }, h("h2", {}, "Last lines"), h("pre", { class: "logs" }, job.log_tail.join("\n"))) : "");

    retime(eventList);
    const newEvents = ev.items.filter((e) => e.id > lastEvent); // sure not to show one twice
    if (newEvents.length) {
      eventList.append(...newEvents.map(eventItem));
      lastEvent = newEvents[newEvents.length - 1].id;
    }

    const newPoints = m.points.filter((p) => !points.length || p.n > points[points.length - 1].n);
    if (newPoints.length) {
      points = points.concat(newPoints).slice(-MAX_POINTS);
      chartBox.replaceChildren(h("h2", {}, "Metrics"), chart(points));
    }

    if (log.lines.length) {
      const follow = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
      logBox.append(log.lines.map((l) => l.text).join("\n") + "\n");
      if (follow) logBox.scrollTop = logBox.scrollHeight;
    }
    nextLine = log.next;
  }

  function fail(error) {
    if (error.status === 404) { view.replaceChildren(h("p", { class: "error" }, "No such job.")); return STOP; }
    showError(top, error);
  }

  const poller = poll(mine, load, show, fail);
}

const percent = (x) => `${Math.round(x * 100)}%`;

// Each team's recent GPU usage against its share, and what it holds against its quota.
function teamsTable(teams) {
  if (!teams.length) return h("p", { class: "muted" }, "No team has jobs or recent usage.");
  return h("table", { "data-testid": "teams" },
    h("thead", {}, h("tr", {}, ["Team", "Recent GPU usage", "Share", "GPUs running / quota", "Queued"].map((t) => h("th", {}, t)))),
    h("tbody", {}, teams.map((t) => {
      const pools = [...new Set([...Object.keys(t.gpus_running), ...Object.keys(t.quota_gpus)])].sort();
      const held = pools.map((p) => `${p}: ${t.gpus_running[p] || 0}` + (t.quota_gpus[p] != null ? ` / ${t.quota_gpus[p]}` : "")).join(", ");
      const over = t.usage_fraction > t.share_fraction;
      return h("tr", { "data-team": t.name }, h("td", {}, t.name),
        h("td", { class: over ? "over" : "" }, `${percent(t.usage_fraction)} (${(t.usage_gpu_seconds / 3600).toFixed(1)} GPU-h)`),
        h("td", {}, `${percent(t.share_fraction)} (weight ${t.share})`), h("td", {}, held || "–"), h("td", {}, t.jobs_queued));
    })));
}

function queueView(mine) {
  const box = h("div", {});
  const teamsBox = h("section", { class: "card wide" }, h("h2", {}, "Teams"));
  view.replaceChildren(h("h1", {}, "Queue"), h("p", { class: "muted" }, "Claimable jobs per pool, in the order workers take them."), teamsBox, box);
  poll(mine, async () => ({ queue: await api("GET", "/api/queue"), teams: await api("GET", "/api/teams") }), ({ queue, teams }) => {
    teamsBox.replaceChildren(h("h2", {}, "Teams"), teamsTable(teams.data.items));
    const pools = Object.entries(queue.data.pools);
    box.replaceChildren(...(pools.length ? pools.map(([pool, jobs]) => h("section", { class: "card wide" }, h("h2", {}, `Pool ${pool}`),
      h("table", {}, h("thead", {}, h("tr", {}, ["#", "Name", "GPUs", "Priority", "Expected start", "Why it waits"].map((t) => h("th", {}, t)))),
        h("tbody", {}, jobs.map((j) => h("tr", {}, h("td", {}, j.position),
          h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name), j.forced ? h("span", { class: "badge forced" }, "forced") : ""),
          h("td", {}, j.gpus), h("td", {}, j.priority), h("td", { "data-testid": "expected" }, j.expected_start_at ? when(j.expected_start_at) : "–"),
          h("td", {}, j.waiting_reason || "")))))))
      : [h("p", { class: "muted" }, "Nothing is waiting.")]));
  }, (error) => showError(box, error));
}

function workersView(mine) {
  const box = h("div", {});
  view.replaceChildren(h("h1", {}, "Workers"), box);
  poll(mine, () => api("GET", "/api/workers"), ({ data }) => {
    box.replaceChildren(data.items.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Alive", "Pools", "Kinds", "GPUs free", "Devices", "Running", "Reserved for", "Heartbeat"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.items.map((w) => h("tr", {},
        h("td", {}, w.name, h("div", { class: "muted" }, w.hostname)),
        h("td", {}, h("span", { class: `badge ${w.alive ? "running" : "failed"}` }, w.alive ? "alive" : "gone")),
        h("td", {}, w.pools.join(", ")), h("td", {}, w.kinds.join(", ")),
        h("td", {}, `${w.gpus.free} of ${w.gpus.total}`),
        h("td", {}, w.gpus.devices.map((d) => h("div", {}, `${d.id}: ${d.name || "GPU"}`
          + (typeof d.utilization === "number" ? ` · ${d.utilization}%` : "")
          + (d.memory_total ? ` · ${(d.memory_used / 2 ** 30).toFixed(1)}/${(d.memory_total / 2 ** 30).toFixed(1)} GiB` : "")))),
        h("td", {}, w.running_jobs.map((id) => h("div", {}, h("a", { href: `#/jobs/${id}` }, id.slice(0, 8))))),
        h("td", { "data-testid": "reservation" }, w.reservation
          ? h("span", {}, h("a", { href: `#/jobs/${w.reservation.job_id}` }, w.reservation.job_name),
            ` · ${w.reservation.gpus} GPUs from ${w.reservation.starts_at ? when(w.reservation.starts_at) : "when they free up"}`)
          : "–"),
        h("td", {}, when(w.last_heartbeat_at))))))
      : h("p", { class: "muted" }, "No worker has registered."));
  }, (error) => showError(box, error));
}

function submitView() {
  const message = h("p", { class: "error", "data-testid": "submit-error" });
  const form = h("form", { class: "card wide submit", onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    let config;
    try { config = JSON.parse(f.get("config") || "{}"); } catch (err) { message.textContent = "Config is not valid JSON: " + err.message; return; }
    const body = { name: f.get("name"), kind: f.get("kind"), config, gpus: Number(f.get("gpus")),
      pool: f.get("pool") || "default", priority: Number(f.get("priority")), hold: f.get("hold") === "on" };
    try {
      const { data } = await api("POST", "/api/training", body);
      location.hash = `#/jobs/${data.id}`;
    } catch (error) { message.textContent = error.message; }
  } },
  h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 200 })),
  h("label", {}, "Kind", h("input", { name: "kind", required: true, value: "train-sgd", pattern: "[A-Za-z0-9._\\-]+" })),
  h("label", {}, "Config (JSON)", h("textarea", { name: "config", rows: 5 }, '{"steps": 200}')),
  h("div", { class: "row" },
    h("label", {}, "GPUs", h("input", { name: "gpus", type: "number", min: 0, max: 64, value: 1 })),
    h("label", {}, "Pool", h("input", { name: "pool", value: "default" })),
    h("label", {}, "Priority", h("input", { name: "priority", type: "number", min: 0, max: 100, value: 50 }))),
  h("label", { class: "inline" }, h("input", { name: "hold", type: "checkbox" }), " Hold (keep it pending until released)"),
  h("button", { type: "submit" }, "Submit"), message);
  view.replaceChildren(h("h1", {}, "Submit a job"), form);
}

// -- routing ------------------------------------------------------------------------

function route() {
  if (polling) polling.stop();
  polling = null;
  const mine = ++routeToken; // a poll of an older route sees it is no longer current
  const [, page, id] = (location.hash || "#/jobs").split("/");
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (page || "jobs"));
  }
  if (page === "jobs" && id) return jobView(mine, id);
  if (page === "queue") return queueView(mine);
  if (page === "sweeps" && id) return sweepView(mine, id);
  if (page === "sweeps") return sweepsView(mine);
  if (page === "workers") return workersView(mine);
  if (page === "submit") return submitView();
  return jobsView(mine);
}

window.addEventListener("hashchange", route);
route();
