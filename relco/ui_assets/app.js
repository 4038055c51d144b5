// The release dashboard: pipelines, releases, one release with its timeline, and the actions of
// the coordinator's API. Every call goes to this page's own server (`relco ui`), which signs it and
// forwards it to the API; the page holds no credential. Text from the API is always inserted as
// text (never as HTML): log tails and reasons are not markup.
"use strict";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "STOPPED", "SUPERSEDED"]);
const STATES = [
  "RECEIVED", "AWAITING_APPROVAL", "QUEUED", "DEPLOYING", "VERIFYING",
  "SUCCEEDED", "FAILED", "STOPPED", "SUPERSEDED",
];
const TRIGGERS = ["upload", "api", "rollback", "auto_rollback", "external", "promotion"];
// An open release that is still moving is read again this often (the page follows it within 2 s).
const POLL_MS = 1000;
const PAGE_SIZE = 25;
const SVG_NS = "http://www.w3.org/2000/svg";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- building the page -------------------------------------------------------------------------

function fill(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function set(node, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  return node;
}

// Replace what a node shows (empty parts, such as a section with nothing to say, are left out).
function replace(node, ...children) {
  node.replaceChildren();
  return fill(node, children);
}

function el(tag, attributes, ...children) {
  return fill(set(document.createElement(tag), attributes), children);
}

function svg(tag, attributes, ...children) {
  return fill(set(document.createElementNS(SVG_NS, tag), attributes), children);
}

function releaseHash(release) {
  return `#/release/${encodeURIComponent(release.id)}`;
}

function releaseLink(id) {
  return id ? el("a", { href: `#/release/${encodeURIComponent(id)}`, class: "release-link" }, id) : "—";
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

function time(value) {
  if (!value) return "—";
  const when = new Date(value);
  return Number.isNaN(when.getTime()) ? value : when.toLocaleString();
}

function duration(ms) {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function facts(rows) {
  return el("dl", { class: "facts" }, rows.filter(Boolean).map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

// Scalar leaves of a nested object, as [dotted name, value] (for figures whose names we show as given).
function leaves(object, prefix = "") {
  const found = [];
  for (const [name, value] of Object.entries(object || {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) found.push(...leaves(value, path));
    else if (value !== null && value !== undefined) found.push([path, Array.isArray(value) ? value.join(", ") : value]);
  }
  return found;
}

// ---- talking to the API (through this page's server) -------------------------------------------

async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: {} };
  if (method === "POST") {
    init.headers["Content-Type"] = "application/json";
    // A fresh key per action: the API carries out a repeated request once.
    init.headers["Idempotency-Key"] = crypto.randomUUID();
    init.body = JSON.stringify(body || {});
  }
  const response = await fetch(`/api${path}`, init);
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (answer && answer.Message) || response.statusText);
  return answer;
}

function showError(error) {
  const banner = document.getElementById("error");
  banner.textContent = error ? String(error.message || error) : "";
  banner.hidden = !error;
}

// ---- routing -----------------------------------------------------------------------------------

// Each rendering gets a number; a poll that belongs to a page no longer shown stops.
let shown = 0;

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: (path || "/").split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

async function render() {
  const view = ++shown;
  const { parts, params } = route();
  const main = document.getElementById("main");
  showError(null);
  document.getElementById("live").hidden = true;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("current", link.dataset.nav === (parts[0] && parts[0].startsWith("release") ? "releases" : "pipelines"));
  }
  try {
    if (parts[0] === "release" && parts[1]) await showRelease(main, parts[1], view);
    else if (parts[0] === "releases") await showReleases(main, params, view);
    else await showPipelines(main, view);
  } catch (error) {
    if (view === shown) showError(error);
  }
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

// ---- confirming an action ----------------------------------------------------------------------

// An action asks first, in the page: what it will do, and a button that does it. ``perform``
// answers the page to show next (a release the action started), or nothing to show this one again.
function confirmStep(anchor, question, label, perform) {
  for (const open of document.querySelectorAll(".confirm")) open.remove();
  const status = el("p", { class: "confirm-status" });
  const yes = el("button", { class: "confirm-yes danger", type: "button" }, label);
  const panel = el("div", { class: "confirm", role: "alertdialog", "aria-label": question },
    el("p", {}, question), yes,
    el("button", { class: "confirm-no", type: "button", onclick: () => panel.remove() }, "Keep as is"),
    status);
  yes.addEventListener("click", async () => {
    yes.disabled = true;
    status.textContent = "Sending…";
    try {
      const next = await perform();
      panel.remove();
      go(next || location.hash);
    } catch (error) {
      status.textContent = error.message;
      yes.disabled = false;
    }
  });
  anchor.after(panel);
}

function actionButton(name, label, question, perform) {
  const button = el("button", { type: "button", "data-action": name }, label);
  button.addEventListener("click", () => confirmStep(button.parentElement, question, `Yes, ${label.toLowerCase()}`, perform));
  return button;
}

// ---- pipelines ---------------------------------------------------------------------------------

async function showPipelines(main, view) {
  const { pipelines } = await api("/pipelines");
  if (view !== shown) return;
  replace(main,
    el("h2", {}, "Pipelines"),
    promotionChains(pipelines),
    el("div", { class: "cards" }, pipelines.map(pipelineCard)),
    el("section", { id: "dora", hidden: true }),
  );
  await showStats(main.querySelector("#dora"), view);
}

function promotionChains(pipelines) {
  const downstream = new Map();
  for (const pipeline of pipelines) {
    const from = pipeline.promotion && pipeline.promotion.promote_from;
    if (from) downstream.set(from, [...(downstream.get(from) || []), pipeline]);
  }
  if (!downstream.size) return null;
  const chain = (pipeline) => el("li", {},
    el("strong", {}, pipeline.name),
    pipeline.promotion.promote_from
      ? el("span", { class: "muted" }, ` promoted ${pipeline.promotion.promote} from ${pipeline.promotion.promote_from}, soak ${pipeline.promotion.soak_s} s`)
      : null,
    ` runs ${running(pipeline)}`,
    downstream.has(pipeline.name) ? el("ul", {}, downstream.get(pipeline.name).map(chain)) : null);
  const roots = pipelines.filter((p) => !(p.promotion && p.promotion.promote_from) && downstream.has(p.name));
  return el("section", { class: "chains" }, el("h3", {}, "Promotion chains"), el("ul", {}, roots.map(chain)));
}

function running(pipeline) {
  const runs = pipeline.promotion && pipeline.promotion.running;
  if (!runs) return "nothing verified yet";
  return runs.version_label || runs.revision.key;
}

function freezeLine(freeze) {
  if (freeze && freeze.current) return el("span", { class: "frozen" }, `frozen until ${time(freeze.current.ends_at)} (${freeze.current.reason})`);
  if (freeze && freeze.next) return `next freeze ${time(freeze.next.starts_at)} to ${time(freeze.next.ends_at)} (${freeze.next.reason})`;
  return null;
}

function pipelineCard(pipeline) {
  const runs = pipeline.promotion && pipeline.promotion.running;
  const actions = el("div", { class: "actions" },
    el("a", { class: "button", href: `#/releases?pipeline=${encodeURIComponent(pipeline.name)}` }, "Releases"),
    pipeline.last_good
      ? actionButton("roll_back", "Roll back",
          `Roll ${pipeline.name} back to its last good release ${pipeline.last_good}?`,
          async () => releaseHash(await api(`/pipelines/${encodeURIComponent(pipeline.name)}/rollback`, { method: "POST" })))
      : null);
  return el("section", { class: "card pipeline", "data-pipeline": pipeline.name },
    el("h3", {}, pipeline.name),
    facts([
      ["runs", runs ? [runs.version_label || runs.revision.key, " (", releaseLink(runs.release_id), runs.verified_at ? `, verified ${time(runs.verified_at)}` : "", ")"] : "nothing verified yet"],
      ["active", releaseLink(pipeline.active)],
      ["waiting", pipeline.waiting.length ? pipeline.waiting.map((id) => [releaseLink(id), " "]) : "—"],
      pipeline.awaiting_approval && pipeline.awaiting_approval.length
        ? ["awaiting approval", pipeline.awaiting_approval.map((mark) => [releaseLink(mark.release_id), ` (until ${time(mark.expires_at)}) `])]
        : null,
      ["last good", releaseLink(pipeline.last_good)],
      freezeLine(pipeline.freeze) ? ["freeze", freezeLine(pipeline.freeze)] : null,
      ["source", `s3://${pipeline.bucket}/${pipeline.prefix}`],
      ["deploys to", `${pipeline.application} / ${pipeline.deployment_group}`],
      ["when busy", pipeline.on_busy],
    ]),
    actions);
}

// DORA figures from GET /stats, drawn when the API has that route; an API without it answers 404
// (API Gateway: 403 for a path it does not know), and the section stays away.
async function showStats(section, view) {
  let stats;
  try {
    stats = await api("/stats?days=30");
  } catch (error) {
    if (error.status === 404 || error.status === 403) return;
    throw error;
  }
  if (view !== shown) return;
  const entries = Array.isArray(stats.pipelines) ? stats.pipelines : [stats];
  const figures = entries.map((entry) => ({
    name: entry.pipeline || entry.name || "all pipelines",
    values: leaves(entry).filter(([, value]) => typeof value === "number"),
  }));
  const names = [...new Set(figures.flatMap((f) => f.values.map(([name]) => name)))];
  // The API reads a bounded number of releases per request: a pipeline it stopped short of the
  // window's start has figures over its newest part only (covered_since, docs/stats.md).
  const partial = entries.filter((entry) => entry.covered_since && entry.covered_since !== entry.since);
  replace(section, el("h2", {}, `DORA metrics, last ${stats.days || 30} days`),
    el("div", { class: "cards" }, names.map((name) => statChart(name, figures))),
    partial.map((entry) => el("p", { class: "muted partial", "data-pipeline": entry.pipeline },
      `${entry.pipeline}: these figures cover only since ${new Date(entry.covered_since).toLocaleString()}, ` +
      `the read was bounded; \`relco stats ${entry.pipeline}\` or fewer --days covers more of the window`)));
  section.hidden = false;
}

function statChart(name, figures) {
  const rows = figures.map((f) => [f.name, (f.values.find(([n]) => n === name) || [])[1]]).filter(([, v]) => typeof v === "number");
  const top = Math.max(...rows.map(([, v]) => v), 0) || 1;
  const height = rows.length * 24 + 8;
  return el("figure", { class: "card stat" }, el("figcaption", {}, name),
    svg("svg", { viewBox: `0 0 320 ${height}`, class: "chart", role: "img", "aria-label": name },
      rows.map(([label, value], index) => [
        svg("text", { x: 0, y: index * 24 + 18, class: "chart-label" }, label),
        svg("rect", { x: 110, y: index * 24 + 6, width: Math.max(1, (150 * value) / top), height: 16, class: "chart-bar" }),
        svg("text", { x: 114 + (150 * value) / top, y: index * 24 + 18, class: "chart-value" }, Number.isInteger(value) ? value : value.toFixed(2)),
      ])));
}

// ---- releases ----------------------------------------------------------------------------------

async function showReleases(main, params, view) {
  const { pipelines } = await api("/pipelines");
  if (view !== shown) return;
  const chosen = { pipeline: params.get("pipeline") || "", state: params.get("state") || "", trigger: params.get("trigger") || "" };
  const select = (name, options) => el("label", {}, `${name} `,
    el("select", {
      name,
      onchange: (event) => {
        const next = new URLSearchParams({ ...chosen, [name]: event.target.value });
        for (const [key, value] of [...next]) if (!value) next.delete(key);
        go(`#/releases?${next}`);
      },
    }, el("option", { value: "" }, "any"), options.map((option) => el("option", { value: option, selected: option === chosen[name] }, option))));
  const body = el("tbody");
  const more = el("button", { type: "button", id: "more", hidden: true }, "Older releases");
  const count = el("p", { class: "muted" });
  // The API filters: each page holds only matching releases, though a filter that matches rarely
  // may give a short page (even an empty one) with a next; its token is a position only, so every
  // page is asked for with the same filters.
  let next = null;
  const loadPage = async () => {
    const query = new URLSearchParams({ limit: PAGE_SIZE });
    for (const name of ["pipeline", "state", "trigger"]) if (chosen[name]) query.set(name, chosen[name]);
    if (next) query.set("next", next);
    const page = await api(`/releases?${query}`);
    if (view !== shown) return;
    fill(body, page.releases.map(releaseRow));
    next = page.next;
    more.hidden = !next;
    count.textContent = `${body.children.length} shown${next ? "; older ones on the next page" : ""}`;
  };
  more.addEventListener("click", () => loadPage().catch(showError));
  replace(main,
    el("h2", {}, "Releases"),
    el("form", { class: "filters" },
      select("pipeline", pipelines.map((p) => p.name)), select("state", STATES), select("trigger", TRIGGERS)),
    el("table", { class: "releases" },
      el("thead", {}, el("tr", {}, ["release", "pipeline", "state", "trigger", "version", "created"].map((h) => el("th", {}, h)))),
      body),
    count, more);
  await loadPage();
}

function releaseRow(release) {
  return el("tr", { "data-release": release.id },
    el("td", {}, releaseLink(release.id)),
    el("td", {}, release.pipeline),
    el("td", {}, stateBadge(release.state)),
    el("td", {}, release.trigger),
    el("td", {}, (release.metadata && release.metadata.version_label) || release.revision.key),
    el("td", {}, time(release.created_at)));
}

// ---- one release -------------------------------------------------------------------------------

async function showRelease(main, id, view) {
  const release = await api(`/releases/${encodeURIComponent(id)}`);
  if (view !== shown) return;
  // While someone is confirming an action, the page stays as it is; the next poll catches up.
  if (!main.querySelector(".confirm")) replace(main, releasePage(release));
  const moving = !TERMINAL.has(release.state);
  document.getElementById("live").hidden = !moving;
  if (moving) {
    setTimeout(() => {
      if (view === shown) showRelease(main, id, view).catch((error) => view === shown && showError(error));
    }, POLL_MS);
  }
}

function releasePage(release) {
  const history = [...(release.history || [])].sort((a, b) => a.id - b.id);
  const metadata = release.metadata || {};
  const revision = release.revision || {};
  return [
    el("h2", {}, "Release ", el("code", {}, release.id), " ", el("span", { id: "release-state", class: `state state-${release.state}` }, release.state)),
    release.reason ? el("p", { id: "release-reason" }, release.reason) : null,
    release.progress ? el("p", { class: "progress" }, progressText(release.progress)) : null,
    releaseActions(release),
    facts([
      ["pipeline", el("a", { href: `#/releases?pipeline=${encodeURIComponent(release.pipeline)}` }, release.pipeline)],
      ["deploys to", `${release.application} / ${release.deployment_group}`],
      ["trigger", `${release.trigger}${release.actor ? ` by ${release.actor}` : ""}`],
      ["revision", `s3://${revision.bucket}/${revision.key}${revision.version ? ` version ${revision.version}` : ""}`],
      release.deployment_id ? ["deployment", release.deployment_id] : null,
      ["created", time(release.created_at)],
      ["updated", time(release.updated_at)],
      ...Object.entries(metadata).filter(([name]) => !RELATED_METADATA[name]).map(([name, value]) => [name.replace(/_/g, " "), value]),
    ]),
    related(release, history),
    el("h3", {}, "Timeline"),
    timeline(history, release),
    receipt(history),
    diagnostics(history),
    healthChecks(history),
    el("details", { class: "history" }, el("summary", {}, `History (${history.length} events)`), historyTable(history)),
  ];
}

function progressText(progress) {
  if (progress.phase === "deploying") return `deploying: ${progress.instances_done || 0}/${progress.instances_total || "?"} instances done (${progress.deployment_status || "?"})`;
  if (progress.phase === "verifying") return `verifying: ${progress.checks_done || 0}/${progress.checks_needed || "?"} healthy checks`;
  return leaves(progress).map(([name, value]) => `${name} ${value}`).join(", ");
}

function releaseActions(release) {
  const id = encodeURIComponent(release.id);
  const open = async (path, body) => releaseHash(await api(path, { method: "POST", body }));
  const reload = async (path) => { await api(path, { method: "POST" }); };
  const buttons = [];
  if (release.state === "AWAITING_APPROVAL") {
    buttons.push(actionButton("approve", "Approve", `Approve release ${release.id}? It takes its pipeline's slot or its place in line.`, () => reload(`/releases/${id}/approve`)));
  }
  if (!TERMINAL.has(release.state)) {
    const how = release.state === "DEPLOYING" ? " CodeDeploy is asked to stop the deployment." : "";
    buttons.push(actionButton("cancel", "Cancel", `Cancel release ${release.id} (${release.state})?${how}`, () => reload(`/releases/${id}/cancel`)));
  } else {
    buttons.push(actionButton("redeploy", "Redeploy", `Deploy the revision of ${release.id} again, as a new release of ${release.pipeline}?`, () => open(`/releases/${id}/redeploy`)));
  }
  if (release.state === "SUCCEEDED") {
    buttons.push(actionButton("roll_back", "Roll back to this", `Roll ${release.pipeline} back to release ${release.id}'s revision, as a new release?`,
      () => open(`/pipelines/${encodeURIComponent(release.pipeline)}/rollback`, { to: release.id })));
  }
  return el("div", { class: "actions" }, buttons);
}

// Releases a release names, by what they are to it.
const RELATED_METADATA = {
  promoted_from: "promoted from",
  redeploy_of: "redeploys",
  rolled_back_by: "rolled back by",
};
const RELATED_DETAIL = {
  rollback_release_id: "rolled back by",
  superseded_by: "superseded by",
};

function related(release, history) {
  const links = new Map();
  if (release.rollback_of) links.set(release.rollback_of, "rolls back");
  for (const [name, label] of Object.entries(RELATED_METADATA)) {
    const id = (release.metadata || {})[name];
    if (id) links.set(id, label);
  }
  for (const event of history) {
    for (const [name, label] of Object.entries(RELATED_DETAIL)) {
      const id = (event.detail || {})[name];
      if (typeof id === "string" && id) links.set(id, label);
    }
  }
  if (!links.size) return null;
  return el("ul", { class: "related" }, [...links].map(([id, label]) => el("li", {}, `${label} `, releaseLink(id))));
}

// Each state the release was in, as a bar from when it entered that state to when it left it (a
// release still moving: to now); the terminal state is a mark.
function stateSpans(history, release) {
  const spans = [];
  for (const event of history) {
    const at = Date.parse(event.timestamp);
    const last = spans[spans.length - 1];
    if (last && last.state === event.state) continue;
    if (last) last.end = at;
    spans.push({ state: event.state, start: at, end: null });
  }
  const last = spans[spans.length - 1];
  if (last) last.end = TERMINAL.has(release.state) ? last.start : Math.max(Date.now(), last.start);
  return spans;
}

function timeline(history, release) {
  const spans = stateSpans(history, release);
  if (!spans.length) return el("p", { class: "muted" }, "No history yet.");
  const row = 30;
  const left = 160;
  const width = 560;
  const begin = spans[0].start;
  const total = Math.max(spans[spans.length - 1].end - begin, 1);
  const x = (at) => left + (width * (at - begin)) / total;
  const height = spans.length * row + 26;
  return svg("svg", { id: "timeline", viewBox: `0 0 ${left + width + 110} ${height}`, role: "img", "aria-label": "release timeline" },
    spans.map((span, index) => {
      const y = index * row + 6;
      const terminal = TERMINAL.has(span.state) && span.end === span.start;
      return svg("g", { class: `span state-${span.state}`, "data-state": span.state },
        svg("text", { x: 0, y: y + 15, class: "span-label" }, span.state),
        terminal
          ? svg("circle", { cx: x(span.start), cy: y + 10, r: 7, class: "mark" })
          : svg("rect", { x: x(span.start), y, width: Math.max(x(span.end) - x(span.start), 2), height: 20, rx: 3, class: "bar" }),
        svg("text", { x: (terminal ? x(span.start) + 12 : x(span.end) + 6), y: y + 15, class: "span-time" },
          terminal ? new Date(span.start).toLocaleTimeString() : duration(span.end - span.start)));
    }),
    svg("text", { x: left, y: height - 4, class: "axis" }, time(new Date(begin).toISOString())),
    svg("text", { x: left + width, y: height - 4, class: "axis", "text-anchor": "end" }, `+${duration(total)}`));
}

function terminalEvent(history) {
  return [...history].reverse().find((event) => TERMINAL.has(event.state) && event.type.startsWith("Execution"));
}

// The zero-downtime receipt: the load balancer's figures for the rollout, on the terminal event.
function receipt(history) {
  const ended = terminalEvent(history);
  const figures = ended && ended.detail && ended.detail.receipt;
  if (!figures) return null;
  return el("section", { id: "receipt", class: "card" },
    el("h3", {}, "Zero-downtime receipt"),
    figures.summary ? el("p", { class: "summary" }, figures.summary) : null,
    figures.unavailable ? el("p", { class: "muted" }, `figures unavailable: ${figures.unavailable}`) : null,
    facts(leaves(figures).filter(([name]) => name !== "summary" && name !== "unavailable").map(([name, value]) => [name.replace(/_/g, " "), String(value)])));
}

// Why a deployment failed: CodeDeploy's error, and each failed instance's hook, script and log tail.
function diagnostics(history) {
  const failures = history.filter((event) => event.detail && (event.detail.failed_instances || (event.type === "ExecutionFailed" && event.detail.error)));
  if (!failures.length) return null;
  return el("section", { id: "diagnostics", class: "card failure" }, el("h3", {}, "Failure"),
    failures.map((event) => [
      event.detail.error || event.detail.cause ? el("p", {}, el("strong", {}, event.detail.error || ""), " ", event.detail.cause || "") : null,
      (event.detail.failed_instances || []).map((failed) => el("div", { class: "instance" },
        el("p", {}, el("code", {}, failed.instance), ` ${failed.status || ""}`,
          failed.lifecycle_event ? [": ", el("strong", {}, failed.lifecycle_event), " failed"] : null,
          failed.script ? [" in ", el("code", {}, failed.script)] : null,
          failed.error_code ? ` (${failed.error_code})` : null),
        failed.message ? el("p", {}, failed.message) : null,
        failed.log_tail ? el("pre", { class: "log" }, failed.log_tail) : null)),
    ]));
}

function healthChecks(history) {
  const checks = history.filter((event) => event.detail && event.detail.task === "HealthCheck");
  if (!checks.length) return null;
  const problems = (detail) => [
    ...(detail.not_healthy || []).map((t) => `${t.target || "?"} ${t.state || "?"}${t.reason ? ` (${t.reason}${t.description ? `: ${t.description}` : ""})` : ""}`),
    ...(detail.in_alarm || []).map((alarm) => `alarm ${alarm.name || JSON.stringify(alarm)} in ALARM`),
    ...(detail.missing_alarms || []).map((name) => `alarm ${name} missing`),
    detail.error ? detail.error : null,
    detail.past_deadline ? "past the deadline" : null,
  ].filter(Boolean).join("; ");
  return el("section", { id: "health-checks" }, el("h3", {}, "Health checks"),
    el("table", {},
      el("thead", {}, el("tr", {}, ["check", "time", "result", "streak", "instances", "seen"].map((h) => el("th", {}, h)))),
      el("tbody", {}, checks.map((event) => el("tr", { class: event.type === "TaskFailed" ? "bad" : "good" },
        el("td", {}, `#${event.detail.check}`),
        el("td", {}, time(event.timestamp)),
        el("td", {}, event.detail.outcome || event.type),
        el("td", {}, `${event.detail.streak ?? "?"}/${event.detail.healthy_checks ?? "?"}`),
        el("td", {}, event.detail.instances ?? "?"),
        el("td", {}, problems(event.detail) || "all healthy"))))));
}

function historyTable(history) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ["#", "time", "event", "state", "detail"].map((h) => el("th", {}, h)))),
    el("tbody", {}, history.map((event) => el("tr", {},
      el("td", {}, event.id),
      el("td", {}, time(event.timestamp)),
      el("td", {}, event.type),
      el("td", {}, stateBadge(event.state)),
      el("td", { class: "detail" }, leaves(event.detail).filter(([name]) => !name.startsWith("failed_instances") && !name.startsWith("receipt"))
        .map(([name, value]) => `${name}=${value}`).join("  "))))));
}

window.addEventListener("hashchange", render);
render();
