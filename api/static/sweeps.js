// jobqueue web monitor: the sweeps pages (loaded before monitor.js, whose helpers
// h, api, poll, when, badge and showError they use when called).
"use strict";

// The bulk actions a sweep page offers; the server applies each to the jobs it fits.
const SWEEP_ACTIONS = [
  ["pause", "Pause all"], ["resume", "Resume all"], ["force-start", "Start all now"],
  ["retry", "Retry failed"], ["cancel", "Cancel all", true],
];
const SWEEP_ROWS = 1000;

function countsText(counts) {
  return Object.entries(counts).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(" · ") || "no jobs";
}

function bestText(sweep) {
  if (!sweep.objective) return "–";
  if (!sweep.best) return `no ${sweep.objective.metric} reported yet`;
  return `${sweep.best.name}: ${sweep.objective.metric} ${sweep.best.value} (${sweep.objective.mode})`;
}

function sweepsView(mine) {
  const box = h("div", {});
  view.replaceChildren(h("h1", {}, "Sweeps"), box);
  poll(mine, () => api("GET", "/api/sweeps?limit=100"), ({ data }) => {
    box.replaceChildren(data.items.length ? h("table", { "data-testid": "sweeps" },
      h("thead", {}, h("tr", {}, ["Name", "Team", "Owner", "Jobs", "Cap", "Best", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.items.map((s) => h("tr", { "data-sweep": s.id },
        h("td", {}, h("a", { href: `#/sweeps/${s.id}` }, s.name)), h("td", {}, s.team), h("td", {}, s.owner),
        h("td", {}, countsText(s.counts) + (s.held ? ` (${s.held} held by the cap)` : "")),
        h("td", {}, s.max_running ?? "–"), h("td", {}, bestText(s)), h("td", {}, when(s.created_at))))))
      : h("p", { class: "muted" }, "No sweep yet: POST /api/sweeps submits one."));
  }, (error) => showError(box, error));
}

function sweepView(mine, id) {
  const head = h("section", { class: "card wide" });
  const message = h("p", { class: "error", "data-testid": "sweep-error" });
  const table = h("div", { class: "card wide" });
  let sort = { by: "index", metric: null, desc: false };
  let poller = null;
  const buttons = h("div", { class: "actions" }, SWEEP_ACTIONS.map(([name, label, danger]) =>
    h("button", { class: danger ? "danger" : "", "data-action": name, onclick: async () => {
      if (danger && !confirm(`${label}?`)) return;
      try {
        const { data } = await api("POST", `/api/sweeps/${id}/${name}`, {});
        message.textContent = `${data.changed} changed, ${data.requested} running asked to stop, ${data.unchanged} unchanged`;
      } catch (error) { message.textContent = error.message; }
    } }, label)));
  view.replaceChildren(h("p", {}, h("a", { href: "#/sweeps" }, "← all sweeps")), head, buttons, message, table);

  const header = (label, key, metric) => {
    const active = sort.by === key && sort.metric === metric;
    return h("th", { class: "sortable", "data-sort": metric ? `metric:${metric}` : key, onclick: () => {
      sort = { by: key, metric, desc: active ? !sort.desc : false };
      poller.now();
    } }, label + (active ? (sort.desc ? " ▼" : " ▲") : ""));
  };
  const refresh = async () => {
    const query = new URLSearchParams({ sort: sort.by, order: sort.desc ? "desc" : "asc", limit: SWEEP_ROWS });
    if (sort.metric) query.set("metric", sort.metric);
    const [{ data: sweep }, { data: jobs }] = [await api("GET", `/api/sweeps/${id}`), await api("GET", `/api/sweeps/${id}/jobs?${query}`)];
    head.replaceChildren(h("h1", {}, sweep.name),
      h("p", {}, `${sweep.team} · ${sweep.owner} · ${countsText(sweep.counts)}`
        + (sweep.max_running ? ` · at most ${sweep.max_running} running (${sweep.held} held)` : "")),
      h("p", { "data-testid": "best" }, "Best: " + bestText(sweep)));
    const configKeys = [...new Set(jobs.items.flatMap((j) => Object.keys(j.config)))].sort();
    const metricKeys = [...new Set(jobs.items.flatMap((j) => Object.keys(j.metrics || {})))].sort();
    table.replaceChildren(h("table", { "data-testid": "sweep-jobs" },
      h("thead", {}, h("tr", {}, header("#", "index"), h("th", {}, "Job"), header("Status", "status"),
        header("Progress", "progress"), ...metricKeys.map((k) => header(k, "metric", k)),
        ...configKeys.map((k) => h("th", { class: "config" }, k)))),
      h("tbody", {}, jobs.items.map((j) => h("tr", { "data-index": j.sweep_index },
        h("td", {}, j.sweep_index), h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name)),
        h("td", {}, h("span", { class: `badge ${j.status}` }, j.sweep_held ? "held" : j.status)),
        h("td", {}, j.progress && j.progress.fraction != null ? `${Math.round(j.progress.fraction * 100)}%` : "–"),
        ...metricKeys.map((k) => h("td", { class: "metric", "data-key": k }, j.metrics && k in j.metrics ? String(j.metrics[k]) : "–")),
        ...configKeys.map((k) => h("td", { class: "config", "data-key": k }, k in j.config ? JSON.stringify(j.config[k]) : "–")))))));
  };
  poller = poll(mine, refresh, () => {}, (error) => showError(table, error));
}
