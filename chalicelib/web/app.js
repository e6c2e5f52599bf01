// stagetrack dashboard: one ES module, no build step, no third-party code.
// Every page is drawn from the public HTTP API with the session cookie (HttpOnly: this script
// never sees it); writes send the session's CSRF token. Text from the API is only ever set as
// textContent or attribute values, never parsed as HTML. Pages poll with If-None-Match.

const POLL_MS = 2000; // one conditional GET per open page every 2 s (docs/dashboard.md)
const OPERATE = new Set(["operate", "admin"]);
const ACTIVE = new Set(["IN_PROGRESS", "WAITING_FOR_APPROVAL", "RETRY_PENDING"]);

const state = { session: null, timer: null, ticker: null, etags: new Map(), bodies: new Map(), view: 0 };

// ---- DOM helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function main() {
  return $("main");
}

function show(...nodes) {
  main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function toast(text) {
  $("toast").textContent = text;
  setTimeout(() => { if ($("toast").textContent === text) $("toast").textContent = ""; }, 5000);
}

function badge(status, text) {
  return h("span", { class: `badge s-${status}`, text: text || label(status) });
}

function label(status) {
  return String(status || "—").replaceAll("_", " ").toLowerCase();
}

function safeUrl(value) {
  // Only absolute http(s) links from the API are followed: never javascript:, data: or relative.
  if (typeof value !== "string" || !/^https?:\/\//i.test(value)) return null;
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  const s = Math.round(value);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function canOperate() {
  return Boolean(state.session && state.session.scopes.some((s) => OPERATE.has(s)));
}

// ---- the API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.session ? state.session.csrfToken : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && path !== "api/session") signedOut();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// A GET that answers from the last body when the server says 304 (If-None-Match).
async function poll(path) {
  const headers = { Accept: "application/json" };
  const tag = state.etags.get(path);
  if (tag) headers["If-None-Match"] = tag;
  const response = await fetch(path, { headers, credentials: "same-origin", cache: "no-store" });
  if (response.status === 304 && state.bodies.has(path)) return { changed: false, data: state.bodies.get(path) };
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401) signedOut();
  if (!response.ok) throw new ApiError(response.status, data);
  const etag = response.headers.get("ETag");
  if (etag) state.etags.set(path, etag);
  state.bodies.set(path, data);
  return { changed: true, data };
}

// Poll ``path`` while the page that started it is shown; ``draw(data)`` on each change.
function live(path, draw) {
  const view = state.view;
  const tick = async () => {
    if (view !== state.view) return;
    try {
      const { changed, data } = await poll(path);
      if (view !== state.view) return;
      if (changed) draw(data);
    } catch (error) {
      if (view === state.view) showError(error);
    }
    if (view === state.view && !document.hidden) state.timer = setTimeout(tick, POLL_MS);
    else if (view === state.view) state.timer = null;
  };
  state.resume = () => { if (view === state.view && state.timer === null) tick(); };
  return tick();
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.resume) state.resume(); // hidden tabs stop polling
});

function stopPolling() {
  state.view += 1;
  clearTimeout(state.timer);
  clearInterval(state.ticker);
  state.timer = null;
  state.ticker = null;
  state.resume = null;
  state.resize = null;
  state.insights = null;
}

function showError(error) {
  const existing = main().querySelector(".load-error");
  const text = error instanceof ApiError ? `${error.message} (${error.status})` : String(error.message || error);
  if (existing) existing.textContent = text;
  else main().prepend(h("p", { class: "error load-error", role: "alert", text }));
}

// ---- session ----------------------------------------------------------------------------------

function signedOut() {
  state.session = null;
  stopPolling();
  $("top").hidden = true;
  renderSignIn();
}

function renderSignIn(message) {
  const error = h("p", { class: "error", role: "alert", id: "signin-error", text: message || "" });
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off",
                             required: true, spellcheck: "false" });
  const form = h("form", { class: "signin", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      state.session = await call("POST", "api/session", { token: input.value.trim() });
      input.value = "";
      signedIn();
    } catch (e) {
      error.textContent = e.status === 401 ? "That token is unknown or revoked." : e.message;
      input.focus();
    }
  } },
  h("h1", { text: "Sign in to stagetrack" }),
  h("label", { for: "token", text: "Token" }), input,
  h("button", { type: "submit", text: "Sign in" }),
  error,
  h("p", { class: "muted", text: "Your token is exchanged for a session cookie; it is not kept by this page." }));
  show(form);
  document.title = "Sign in · stagetrack";
  input.focus();
}

function signedIn() {
  const s = state.session;
  $("top").hidden = false;
  const scope = s.scopes.join(", ");
  const limit = s.pipelines ? ` · ${s.pipelines.join(", ")}` : "";
  $("who").textContent = `${s.name} (${scope}${limit})`;
  route();
}

$("sign-out").addEventListener("click", async () => {
  try {
    await call("DELETE", "api/session");
  } finally {
    signedOut();
    location.hash = "#/";
  }
});

// ---- routing ----------------------------------------------------------------------------------

function route() {
  if (!state.session) return;
  stopPolling();
  const raw = location.hash.replace(/^#/, "");
  for (const link of document.querySelectorAll(".top nav a")) link.removeAttribute("aria-current");
  if (raw === "/insights" || raw.startsWith("/insights?")) {
    $("nav-insights").setAttribute("aria-current", "page");
    return insightsPage(new URLSearchParams(raw.slice("/insights".length + 1)));
  }
  const path = decodeURIComponent(raw) || "/";
  let match;
  if ((match = path.match(/^\/runs\/(.+)$/))) return runPage(match[1]);
  if ((match = path.match(/^\/pipelines\/([^/]+)\/schedules$/))) return schedulesPage(match[1]);
  if ((match = path.match(/^\/pipelines\/(.+)$/))) return pipelinePage(match[1]);
  if (path === "/approvals") {
    $("nav-approvals").setAttribute("aria-current", "page");
    return approvalsPage();
  }
  $("nav-pipelines").setAttribute("aria-current", "page");
  return overviewPage();
}

window.addEventListener("hashchange", route);

// ---- pipelines overview: a status matrix of runs x stages per pipeline -------------------------

function matrix(runs, caption) {
  const names = [];
  for (const run of runs) for (const stage of run.stages || []) if (!names.includes(stage.name)) names.push(stage.name);
  const head = h("tr", {}, h("th", { scope: "col", text: "Run" }), h("th", { scope: "col", text: "Status" }),
    h("th", { scope: "col", text: "Branch" }), names.map((n) => h("th", { scope: "col", text: n })));
  const rows = runs.map((run) => {
    const byName = new Map((run.stages || []).map((s) => [s.name, s]));
    return h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: `#${run.counter}` })),
      h("td", {}, badge(run.status)),
      h("td", { text: run.branch || "—" }),
      names.map((n) => {
        const stage = byName.get(n);
        if (!stage) return h("td", { class: "cell" });
        return h("td", { class: "cell" }, h("span", { class: `dot s-${stage.status}`, role: "img",
          title: `${n}: ${label(stage.status)}`, "aria-label": `${n}: ${label(stage.status)}` }));
      }));
  });
  return h("div", { class: "scroll" }, h("table", {}, h("caption", { class: "muted", text: caption }),
    h("thead", {}, head), h("tbody", {}, rows)));
}

function overviewPage() {
  document.title = "Pipelines · stagetrack";
  const filter = h("input", { id: "filter", type: "search", placeholder: "pipeline or branch" });
  const status = h("select", { id: "status-filter" },
    ["", "FAILURE", "IN_PROGRESS", "WAITING_FOR_APPROVAL", "RETRY_PENDING", "QUEUED", "SUCCESS"].map((s) =>
      h("option", { value: s, text: s ? label(s) : "any status" })),
    h("option", { value: "paused", text: "paused" }));
  const list = h("div", { id: "pipelines" }, h("p", { class: "muted", text: "Loading…" }));
  let items = [];
  const draw = () => {
    const text = filter.value.trim().toLowerCase();
    const wanted = status.value;
    const shown = items.filter((p) => {
      const runs = p.recentRuns || [];
      const textOk = !text || p.name.toLowerCase().includes(text) ||
        runs.some((r) => (r.branch || "").toLowerCase().includes(text));
      const statusOk = !wanted || (wanted === "paused" ? p.paused : runs.length && runs[0].status === wanted);
      return textOk && statusOk;
    });
    list.replaceChildren(...(shown.length ? shown.map(pipelineCard)
      : [h("p", { class: "muted", text: items.length ? "No pipeline matches the filter." : "No pipelines yet." })]));
  };
  filter.addEventListener("input", draw);
  status.addEventListener("change", draw);
  show(h("h1", { text: "Pipelines" }),
    h("div", { class: "toolbar", role: "search" },
      h("label", { for: "filter", text: "Filter" }), filter,
      h("label", { for: "status-filter", text: "Last run" }), status),
    list);
  return live("api/pipelines?runs=5", (data) => { items = data.items || []; draw(); });
}

function pipelineCard(p) {
  const runs = p.recentRuns || [];
  return h("section", { class: "card", "aria-label": p.name },
    h("header", {},
      h("h2", {}, h("a", { href: `#/pipelines/${encodeURIComponent(p.name)}`, text: p.name })),
      p.paused ? h("span", { class: "badge paused", text: "paused" }) : null,
      h("span", { class: "muted", text: `${p.runCount} run${p.runCount === 1 ? "" : "s"} · last activity ${when(p.lastActivityAt)}` })),
    runs.length ? matrix(runs, runs.length === 1 ? `The last run of ${p.name}` : `Last ${runs.length} runs of ${p.name}, newest first`)
      : h("p", { class: "muted", text: "No runs yet." }));
}

// A pipeline's two pages, runs and schedules, as a small tab bar (links: the URL is the state).
function pipelineTabs(name, current) {
  const base = `#/pipelines/${encodeURIComponent(name)}`;
  const tab = (href, text, key) => h("a", { href, text, "aria-current": current === key ? "page" : null });
  return h("nav", { class: "tabs", "aria-label": `${name} pages` },
    tab(base, "Runs", "runs"), tab(`${base}/schedules`, "Schedules", "schedules"));
}

// The pipeline's pause state and concurrency setting (one GET of its status per visit); with
// ``settings``, operate tokens also get the form that changes the concurrency setting.
function pipelineBadges(name, holder, settings) {
  call("GET", `api/pipelines/${encodeURIComponent(name)}/status`).then((st) => {
    if (!st) return;
    if (settings && canOperate()) settings.replaceChildren(concurrencyForm(name, st.concurrency || {}));
    const out = [];
    if (st.paused) out.push(h("span", { class: "badge paused", text: `paused${st.pausedCause ? `: ${st.pausedCause}` : ""}` }));
    const mode = (st.concurrency || {}).mode;
    if (mode && mode !== "PARALLEL") {
      const group = st.concurrency.group ? ` (group ${st.concurrency.group})` : "";
      out.push(h("span", { class: "muted concurrency", text: `concurrency ${label(mode)}${group}${st.locked && st.lockedBy ? ` · held by ${st.lockedBy}` : ""}` }));
    }
    holder.replaceChildren(...out);
  }).catch(() => {});
}

// PUT /api/pipelines/{p}/concurrency: the mode and default group for the runs created from now
// on (runs already waiting or running are left as they are, so no confirmation is asked).
function concurrencyForm(name, current) {
  const mode = h("select", { id: "c-mode", name: "mode" }, ["PARALLEL", "QUEUED", "SUPERSEDED"].map((m) =>
    h("option", { value: m, text: label(m), selected: (current.mode || "PARALLEL") === m })));
  const group = h("input", { id: "c-group", name: "group", type: "text", maxlength: 64, autocomplete: "off",
    spellcheck: "false", value: current.group || "", placeholder: name });
  const save = h("button", { type: "submit", class: "quiet", text: "Save concurrency" });
  const form = h("form", { class: "filters", "aria-label": "Concurrency setting", onsubmit: async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      const st = await call("PUT", `api/pipelines/${encodeURIComponent(name)}/concurrency`,
        { mode: mode.value, ...(group.value.trim() ? { group: group.value.trim() } : {}) });
      toast(`New runs of ${name}: ${label(st.concurrency.mode)}`);
      refresh();
    } catch (error) {
      toast(`Save failed: ${error.message}`);
    } finally {
      save.disabled = false;
    }
  } },
  h("div", { class: "field" }, h("label", { for: "c-mode", text: "Concurrency of new runs" }), mode),
  h("div", { class: "field" }, h("label", { for: "c-group", text: "Group (default: the pipeline)" }), group), save);
  return h("details", { class: "card" }, h("summary", { text: "Concurrency" }),
    h("p", { class: "muted", text: "Parallel: runs overlap. Queued: a new run waits while one of its group is active. Superseded: a new run cancels the active one." }),
    form);
}

function pipelinePage(name) {
  document.title = `${name} · stagetrack`;
  const body = h("div", {}, h("p", { class: "muted", text: "Loading…" }));
  const badges = h("span", {});
  const settings = h("div", {});
  show(h("p", {}, h("a", { href: "#/", text: "← Pipelines" })), h("h1", { text: name }, badges),
    pipelineTabs(name, "runs"), settings, body);
  pipelineBadges(name, badges, settings);
  return live(`api/runs?pipeline=${encodeURIComponent(name)}&limit=25`, (data) => {
    const runs = data.items || [];
    body.replaceChildren(runs.length ? matrix(runs, `Runs of ${name}, newest first`)
      : h("p", { class: "muted", text: "No runs yet." }));
  });
}

// ---- schedules: a pipeline's cron schedules (GET/POST/PATCH/DELETE /api/pipelines/{p}/schedules)

function schedulesPage(name) {
  document.title = `Schedules of ${name} · stagetrack`;
  const path = `api/pipelines/${encodeURIComponent(name)}/schedules`;
  const list = h("div", { id: "schedules", "aria-live": "polite" }, h("p", { class: "muted", text: "Loading…" }));
  const badges = h("span", {});
  show(h("p", {}, h("a", { href: "#/", text: "← Pipelines" })), h("h1", { text: name }, badges),
    pipelineTabs(name, "schedules"),
    h("h2", { id: "h-schedules", text: "Schedules" }),
    h("p", { class: "muted", text: "Each firing starts a run with the stages of the pipeline's latest run; times are read in the schedule's time zone." }),
    list, canOperate() ? scheduleForm(name, path) : null);
  pipelineBadges(name, badges);
  return live(path, (data) => {
    const items = (data && data.items) || [];
    list.replaceChildren(...(items.length ? items.map((item) => scheduleCard(item, path))
      : [h("p", { class: "muted", text: "No schedules yet." })]));
  });
}

// A fire time in the browser's zone and, when it differs, in the schedule's own (the zone its
// cron fields are read in): "2/28/2028, 11:00:00 PM · Feb 29, 2028, 00:00 Europe/Paris".
function zoned(iso, zone) {
  if (!iso) return "—";
  const local = when(iso);
  try {
    const own = new Intl.DateTimeFormat(undefined, { timeZone: zone, dateStyle: "medium", timeStyle: "short", hourCycle: "h23" });
    const browser = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return browser === zone ? local : `${local} · ${own.format(new Date(iso))} ${zone}`;
  } catch {
    return local; // a zone this browser does not know: the local time alone
  }
}

function scheduleCard(item, path) {
  const one = `${path}/${encodeURIComponent(item.id)}`;
  const skipped = item.lastSkipped;
  const variables = Object.keys(item.variables || {}).sort();
  const meta = [
    ["Time zone", item.timeZone],
    ["Next fire", item.enabled ? zoned(item.nextFireAt, item.timeZone) : "— (disabled)"],
    ["Last fired", when(item.lastFiredAt)],
    ["Last run", item.lastRunId ? h("a", { href: `#/runs/${encodeURIComponent(item.lastRunId)}`, text: item.lastRunId }) : "—"],
    ["Last skipped", skipped ? `${when(skipped.at)}: ${label(skipped.reason)}${skipped.message ? ` (${skipped.message})` : ""}` : "—"],
    ["Variables", variables.length ? h("span", {}, variables.flatMap((k, i) => [i ? ", " : "", h("code", { text: `${k}=${item.variables[k]}` })])) : "—"],
    ["Created by", `${item.createdBy || "—"}, ${when(item.createdAt)}`],
  ];
  const title = item.description ? `${item.description}` : `Schedule ${item.id}`;
  return h("section", { class: "card schedule", "data-schedule": item.id, "aria-label": `${title}: ${item.cron}` },
    h("header", {},
      h("h3", {}, h("code", { text: item.cron })),
      h("span", { class: `badge ${item.enabled ? "s-SUCCESS" : "s-IDLE"}`, text: item.enabled ? "enabled" : "disabled" }),
      item.description ? h("span", { text: item.description }) : null,
      h("span", { class: "muted", text: item.id })),
    h("dl", { class: "meta" }, meta.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)])),
    scheduleActions(item, one));
}

// Enable and disable are reversible, so they act at once; delete asks first (it cannot be undone).
function scheduleActions(item, one) {
  if (!canOperate()) return null; // read-only tokens see no buttons (and the API refuses them)
  const what = `schedule ${item.cron}${item.description ? ` (${item.description})` : ""}`;
  const toggle = h("button", { type: "button", class: "quiet", text: item.enabled ? "Disable" : "Enable",
    "aria-label": `${item.enabled ? "Disable" : "Enable"} ${what}`, onclick: async () => {
      toggle.disabled = true;
      try {
        await call("PATCH", one, { enabled: !item.enabled });
        toast(`${item.enabled ? "Disabled" : "Enabled"} ${what}`);
        refresh();
      } catch (error) {
        toggle.disabled = false;
        toast(`${item.enabled ? "Disable" : "Enable"} failed: ${error.message}`);
      }
    } });
  const remove = h("button", { type: "button", class: "danger", text: "Delete", "aria-label": `Delete ${what}`, onclick: () =>
    confirmThen({ title: `Delete ${what}?`, text: "It fires no more runs; runs it already started are kept.", ok: "Delete schedule", danger: true },
      () => call("DELETE", one)) });
  return h("div", { class: "actions", role: "group", "aria-label": `Actions of ${what}` }, toggle, remove);
}

// "KEY=value" per line -> {KEY: "value"}; a line without "=" is an error named by its number.
function parseVariables(text) {
  const out = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i].trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`line ${i + 1}: expected KEY=value`);
    out[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return out;
}

function scheduleForm(name, path) {
  const field = (id, text, control, hint) => h("div", { class: "field" }, h("label", { for: id, text }), control,
    hint ? h("span", { class: "muted hint", id: `${id}-hint`, text: hint }) : null);
  const cron = h("input", { id: "s-cron", name: "cron", type: "text", required: true, maxlength: 100, autocomplete: "off",
    spellcheck: "false", placeholder: "0 9 * * MON-FRI", "aria-describedby": "s-cron-hint" });
  const zone = h("input", { id: "s-zone", name: "timeZone", type: "text", maxlength: 64, autocomplete: "off",
    spellcheck: "false", value: "UTC", list: "s-zones", "aria-describedby": "s-zone-hint" });
  const zones = h("datalist", { id: "s-zones" });
  try {
    for (const z of Intl.supportedValuesOf("timeZone")) zones.append(h("option", { value: z }));
  } catch { /* an older browser: the field is free text anyway */ }
  const variables = h("textarea", { id: "s-vars", name: "variables", rows: 3, spellcheck: "false",
    placeholder: "ENV=prod", "aria-describedby": "s-vars-hint" });
  const description = h("input", { id: "s-desc", name: "description", type: "text", maxlength: 255, autocomplete: "off" });
  const enabled = h("input", { id: "s-enabled", name: "enabled", type: "checkbox", checked: true });
  const error = h("p", { class: "error", id: "s-error", role: "alert" });
  const submit = h("button", { type: "submit", text: "Create schedule" });
  const form = h("form", { class: "filters schedule-form", "aria-labelledby": "h-new-schedule", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    for (const control of [cron, zone, variables]) control.removeAttribute("aria-invalid");
    const body = { cron: cron.value.trim(), timeZone: zone.value.trim() || "UTC", enabled: enabled.checked };
    try {
      body.variables = parseVariables(variables.value);
    } catch (e) {
      variables.setAttribute("aria-invalid", "true");
      error.textContent = `Variables: ${e.message}`;
      variables.focus();
      return;
    }
    if (description.value.trim()) body.description = description.value.trim();
    submit.disabled = true;
    try {
      const created = await call("POST", path, body);
      toast(`Created schedule ${created.cron}`);
      refresh();
    } catch (e) {
      const byField = { cron, timeZone: zone, variables, description };
      const named = (e.details || []).filter((d) => d && byField[d.field]);
      for (const d of named) byField[d.field].setAttribute("aria-invalid", "true");
      error.textContent = named.length ? named.map((d) => `${d.field}: ${d.message || "invalid"}`).join("; ")
        : `${e.message}${e.status ? ` (${e.status})` : ""}`;
      (named.length ? byField[named[0].field] : cron).focus();
    } finally {
      submit.disabled = false;
    }
  } },
  field("s-cron", "Cron", cron, "five fields: minute hour day-of-month month day-of-week"),
  field("s-zone", "Time zone", zone, "an IANA name, e.g. Europe/Paris"), zones,
  field("s-vars", "Variables", variables, "one KEY=value per line"),
  field("s-desc", "Description", description),
  h("div", { class: "field check" }, enabled, h("label", { for: "s-enabled", text: "Enabled" })),
  submit);
  return h("section", { class: "card", "aria-labelledby": "h-new-schedule" },
    h("h2", { id: "h-new-schedule", text: "New schedule" }), form, error);
}

// ---- run page: metadata, Gantt timeline, stages, variables, actions ----------------------------

function runPage(id) {
  document.title = `Run ${id} · stagetrack`;
  const gantt = h("div", { class: "gantt", id: "gantt", role: "group", "aria-label": "Stage timeline" });
  const holder = h("div", {}, h("p", { class: "muted", text: "Loading…" }));
  show(h("p", {}, h("a", { href: "#/", text: "← Pipelines" })), holder);
  let last = null;
  let receivedAt = 0;
  state.ticker = setInterval(() => { if (last) drawGantt(gantt, last, receivedAt); }, 1000);
  return live(`api/runs/${encodeURIComponent(id)}?include=attempts`, (run) => {
    last = run;
    receivedAt = Date.now();
    drawGantt(gantt, run, receivedAt);
    holder.replaceChildren(...runDetails(run, gantt));
  });
}

function runDetails(run, gantt) {
  document.title = `${run.pipeline} #${run.counter} · stagetrack`;
  const commit = run.commit || {};
  const source = safeUrl(run.sourceUrl);
  const meta = [
    ["Status", badge(run.status)],
    ["Pipeline", h("a", { href: `#/pipelines/${encodeURIComponent(run.pipeline)}`, text: run.pipeline })],
    ["Branch", run.branch || "—"],
    ["Actor", run.actor || "—"],
    ["Commit", commit.hash ? h("span", {}, h("code", { title: commit.hash, text: String(commit.hash).slice(0, 12) }),
      commit.message ? ` ${commit.message}` : "", commit.committer ? ` (${commit.committer})` : "") : "—"],
    ["Committed", when(commit.committedAt)],
    ["Source", source ? h("a", { href: source, rel: "noopener noreferrer", target: "_blank",
      text: run.source || source }) : (run.source || "—")],
    ["Environment", run.environment || "—"],
    ["Created", when(run.createdAt)],
    ["Duration", h("span", { id: "run-duration", text: seconds(run.duration) })],
  ];
  // when it should end, from its stages' recent p50 (docs/insights.md, Overruns and ETA)
  if (run.eta) meta.push(["ETA", h("span", { id: "run-eta", text: when(run.eta) })]);
  if (run.concurrencyGroup) meta.push(["Concurrency group", run.status === "QUEUED" ? queuedText(run) : run.concurrencyGroup]);
  if (run.cancellation) meta.push([run.cancellation.force === true ? "Force-cancelled" : "Cancelled", `${run.cancellation.by || ""} ${run.cancellation.reason || ""}`.trim() || "yes"]);
  if (run.status === "CANCELLING" && run.stopping && run.stopping.graceUntil) {
    meta.push(["Stopping", `running stages may finish until ${when(run.stopping.graceUntil)}`]);
  }
  return [
    h("h1", {}, `${run.pipeline} #${run.counter}`, badge(run.status)),
    runActions(run),
    h("dl", { class: "meta" }, meta.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)])),
    h("h2", { text: "Timeline" }), gantt,
    h("h2", { text: "Stages" }), stagesTable(run),
    variablesTable(run),
  ];
}

// A QUEUED run's group and place: "deploys: 2nd of 3 in line, behind deploys:7" (the API's
// ``queue``, GET /api/runs/{id} only), linking to the run that holds the group.
function queuedText(run) {
  const q = run.queue;
  if (!q) return `${run.concurrencyGroup} (waits for the run holding it)`;
  const holder = q.holder ? h("a", { href: `#/runs/${encodeURIComponent(q.holder)}`, text: q.holder }) : "a run being promoted";
  return h("span", { id: "queue-place" }, `${run.concurrencyGroup}: waits, ${q.position} of ${q.waiting} in line, behind `, holder);
}

function runActions(run) {
  if (!canOperate()) return null; // read-only tokens see no buttons (and the API refuses them)
  const buttons = [];
  const active = run.stages.some((s) => ACTIVE.has(s.status) || s.status === "IDLE");
  const ended = !active || ["SUCCESS", "FAILURE", "CANCELLED", "TIMED_OUT"].includes(run.status);
  if (!ended) {
    buttons.push(h("button", { type: "button", class: "danger", text: "Cancel run", onclick: () =>
      confirmThen({ title: `Cancel ${run.pipeline} #${run.counter}?`, text: "Every running stage is cancelled now; stages marked always still run.",
        ok: "Cancel run", danger: true, comment: "Reason (optional)" },
      (reason) => call("POST", `api/runs/${encodeURIComponent(run.id)}/cancel`, reason ? { reason } : {})) }));
  }
  // Force-cancel: finally (always) stages are skipped or cancelled too, so the run ends now. Also
  // offered on a finished run whose finally stages have not started (they would still run).
  if (!ended || run.stages.some((s) => s.always && s.status === "IDLE")) {
    buttons.push(h("button", { type: "button", class: "danger", text: "Force cancel", onclick: () =>
      confirmThen({ title: `Force-cancel ${run.pipeline} #${run.counter}?`, text: "Every running stage is cancelled now and stages marked always do NOT run: no cleanup, no notification. The run is CANCELLED at once.",
        ok: "Force cancel", danger: true, comment: "Reason (optional)" },
      (reason) => call("POST", `api/runs/${encodeURIComponent(run.id)}/cancel`, reason ? { reason, force: true } : { force: true })) }));
  }
  if (!ended) {
    if (run.status !== "CANCELLING") { // already stopping: only a cancel ends it sooner
      buttons.push(h("button", { type: "button", class: "danger", text: "Stop", onclick: () =>
        confirmThen({ title: `Stop ${run.pipeline} #${run.counter}?`, text: "Running stages may finish within the grace period; nothing new starts but stages marked always.",
          ok: "Stop run", danger: true, comment: "Reason (optional)", number: "Grace period in seconds (optional)",
          placeholder: run.stopGraceSeconds === null || run.stopGraceSeconds === undefined ? "600" : String(run.stopGraceSeconds) },
        (reason, grace) => call("POST", `api/pipelines/${encodeURIComponent(run.pipeline)}/runs/${run.counter}/stop`,
          { ...(reason ? { reason } : {}), ...(grace === null ? {} : { graceSeconds: grace }) })) }));
    }
  }
  if (run.stages.some((s) => ["FAILURE", "CANCELLED", "TIMED_OUT"].includes(s.status))) {
    buttons.push(h("button", { type: "button", text: "Retry failed stages", onclick: () =>
      confirmThen({ title: `Retry ${run.pipeline} #${run.counter}?`, text: "Failed, cancelled and timed-out stages run again.",
        ok: "Retry" }, () => call("POST", `api/runs/${encodeURIComponent(run.id)}/retry`, { scope: "FAILED" })) }));
  }
  return buttons.length ? h("div", { class: "actions", role: "group", "aria-label": "Run actions" }, buttons) : null;
}

// Why this session's token may not decide a policy gate (null: it may), by the rules the API
// applies (403 not_an_approver, 409 already_decided): the buttons are then replaced by the reason.
function approvalBlock(stage, runActor) {
  const policy = stage.approvalPolicy;
  if (!policy || !state.session) return null;
  const me = state.session.name;
  if ((policy.approvers || []).length) {
    const groups = policy.groups || {};
    const allowed = new Set(policy.approvers.flatMap((a) => (a.startsWith("group:") ? groups[a.slice(6)] || [] : [a])));
    if (!allowed.has(me)) return `You (${me}) are not an allowed approver: ${policy.approvers.join(", ")}.`;
  }
  if (policy.preventSelfApproval && runActor && runActor === me) return `You (${me}) started this run; it prevents self-approval.`;
  const mine = (stage.approvals || []).find((d) => d.by === me && d.attempt === stage.attempt);
  if (mine) return `You ${String(mine.decision).toLowerCase()} it ${when(mine.at)}; waiting for the others.`;
  return null;
}

function stageActions(stage, runActor) {
  if (!canOperate()) return null;
  const path = `api/stages/${encodeURIComponent(stage.id)}`;
  const out = [];
  const blocked = stage.status === "WAITING_FOR_APPROVAL" ? approvalBlock(stage, runActor) : null;
  if (blocked) {
    out.push(h("span", { class: "muted why", text: blocked }));
  } else if (stage.status === "WAITING_FOR_APPROVAL") {
    out.push(h("button", { type: "button", text: "Approve", "aria-label": `Approve ${stage.name}`, onclick: () =>
      confirmThen({ title: `Approve ${stage.name}?`, text: "The stage starts.", ok: "Approve", comment: "Comment (optional)" },
        (comment) => call("POST", `${path}/approve`, comment ? { comment } : {})) }));
    out.push(h("button", { type: "button", class: "danger", text: "Reject", "aria-label": `Reject ${stage.name}`, onclick: () =>
      confirmThen({ title: `Reject ${stage.name}?`, text: "The stage fails.", ok: "Reject", danger: true, comment: "Comment (optional)" },
        (comment) => call("POST", `${path}/reject`, comment ? { comment } : {})) }));
  } else if (stage.status === "RETRY_PENDING") {
    out.push(h("button", { type: "button", class: "quiet", text: "Retry now", "aria-label": `Retry ${stage.name} now`, onclick: () =>
      confirmThen({ title: `Retry ${stage.name} now?`, text: "The pending automatic retry is taken now: the attempt goes back to idle.", ok: "Retry now" },
        () => call("POST", `${path}/retry`, {})) }));
    out.push(h("button", { type: "button", class: "quiet", text: "Cancel", "aria-label": `Cancel ${stage.name}`, onclick: () =>
      confirmThen({ title: `Cancel ${stage.name}?`, text: "The pending automatic retry is cancelled with the stage.", ok: "Cancel stage", danger: true, comment: "Reason (optional)" },
        (reason) => call("POST", `${path}/cancel`, reason ? { reason } : {})) }));
  } else if (stage.status === "IN_PROGRESS" || stage.status === "IDLE") {
    out.push(h("button", { type: "button", class: "quiet", text: "Cancel", "aria-label": `Cancel ${stage.name}`, onclick: () =>
      confirmThen({ title: `Cancel ${stage.name}?`, text: "The stage is cancelled.", ok: "Cancel stage", danger: true, comment: "Reason (optional)" },
        (reason) => call("POST", `${path}/cancel`, reason ? { reason } : {})) }));
  } else if (["FAILURE", "CANCELLED", "TIMED_OUT"].includes(stage.status)) {
    out.push(h("button", { type: "button", class: "quiet", text: "Retry", "aria-label": `Retry ${stage.name}`, onclick: () =>
      confirmThen({ title: `Retry ${stage.name}?`, text: "The stage runs again as a new attempt.", ok: "Retry" },
        () => call("POST", `${path}/retry`, {})) }));
  }
  return out;
}

// A gate with an approval policy: "1 of 2 approvals (alice)" -- who approved so far, by name.
function approvalProgress(stage) {
  const policy = stage.approvalPolicy;
  if (!policy) return null;
  const approved = (stage.approvals || []).filter((d) => d.decision === "APPROVED" && d.attempt === stage.attempt)
    .map((d) => (d.comment ? `${d.by}: “${d.comment}”` : d.by));
  const who = approved.length ? ` (${approved.join(", ")})` : "";
  return `${approved.length} of ${policy.required} approvals${who}`;
}

// A stage's automatic retries: "retry 1 of 2 at <time> (after failure)" while one is pending,
// "1 of 2 automatic retries" once some were used.
function retryText(stage) {
  const policy = stage.retry;
  if (!policy) return null;
  if (stage.nextRetryAt) {
    return `retry ${stage.autoRetries} of ${policy.max} at ${when(stage.nextRetryAt)} (after ${label(stage.retryReason)})`;
  }
  return stage.autoRetries ? `${stage.autoRetries} of ${policy.max} automatic retries` : null;
}

function decisionText(decision) {
  if (!decision) return null;
  const comment = decision.comment ? `: “${decision.comment}”` : "";
  return `${decision.decision.toLowerCase()} by ${decision.by || "?"} ${when(decision.at)}${comment}`;
}

// What bounds a stage still active: a stop's grace end (``cancelsAt``) and the run's whole-run
// deadline (``runDeadline``); empty once it ended.
function boundsText(stage) {
  return [stage.cancelsAt ? `cancelled at ${when(stage.cancelsAt)} unless it ends (stop)` : null,
    stage.runDeadline ? `run deadline ${when(stage.runDeadline)}` : null].filter(Boolean).join(" · ");
}

function stagesTable(run) {
  // a running stage past its recent p95 is marked; the duration cell says what is typical (p50)
  const overrunning = (s) => s.status === "IN_PROGRESS" && Boolean(s.overrunningAt);
  const rows = run.stages.map((s) => h("tr", { "data-stage": s.name, class: overrunning(s) ? "overrunning" : null },
    h("th", { scope: "row" }, s.name, s.always ? h("span", { class: "muted finally", text: " · finally",
      title: "runs after a failure, stop or cancel too" }) : null),
    h("td", {}, badge(s.status), overrunning(s) ? h("span", { class: "badge overrun",
      title: `past its recent p95 since ${when(s.overrunningAt)}`, text: "overrunning" }) : null,
      boundsText(s) ? h("div", { class: "muted why", text: boundsText(s) }) : null),
    h("td", { text: [seconds(s.duration), s.typicalSeconds != null ? `typically ${seconds(s.typicalSeconds)}` : null]
      .filter(Boolean).join(" · ") }),
    h("td", { text: [s.attemptCount > 1 ? `${s.attempt} of ${s.attemptCount}` : String(s.attempt || 1), retryText(s)].filter(Boolean).join(" · ") }),
    h("td", { text: s.environment || "—" }),
    h("td", { text: [approvalProgress(s), decisionText(s.approvalDecision), ...(s.attempts || []).map((a) => a.approvalDecision && `attempt ${a.attempt}: ${decisionText(a.approvalDecision)}`)].filter(Boolean).join("; ") || (s.approval === "MANUAL" ? "needs approval" : "—") }),
    h("td", {}, stageActions(s, run.actor))));
  return h("div", { class: "scroll" }, h("table", { id: "stages" },
    h("thead", {}, h("tr", {}, ["Stage", "Status", "Duration", "Attempt", "Environment", "Approval", ""].map((t) =>
      h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows)));
}

function variablesTable(run) {
  const names = Object.keys(run.variables || {}).sort();
  if (!names.length) return null;
  const secret = new Set(run.secretVariables || []);
  return h("section", {}, h("h2", { text: "Variables" }), h("div", { class: "scroll" }, h("table", {},
    h("tbody", {}, names.map((n) => h("tr", {}, h("th", { scope: "row" }, h("code", { text: n })),
      h("td", {}, secret.has(n) ? h("span", { class: "muted", text: "•••••• (secret)" }) : h("code", { text: run.variables[n] }))))))));
}

// The Gantt chart: every stage a row, each ended attempt a thin bar and the current one a full
// bar on one time axis; a running bar grows every second from the last answer's duration (no
// clock skew: it extrapolates from what the server measured); a running stage's timeout is a line.
function drawGantt(el, run, receivedAt) {
  const since = Date.now() - receivedAt;
  const ms = (iso) => (iso ? new Date(iso).getTime() : null);
  const spans = [];
  let start = ms(run.createdAt);
  let end = start;
  for (const stage of run.stages) {
    const bars = [];
    for (const a of stage.attempts || []) {
      if (a.startedAt) bars.push({ from: ms(a.startedAt), to: ms(a.endedAt) || ms(a.startedAt), status: a.status, old: true, attempt: a.attempt });
    }
    if (stage.startedAt) {
      const from = ms(stage.startedAt);
      const running = !stage.endedAt && stage.duration !== null;
      const to = stage.endedAt ? ms(stage.endedAt) : from + (stage.duration || 0) * 1000 + (running ? since : 0);
      bars.push({ from, to, status: stage.status, live: running, attempt: stage.attempt });
    }
    const deadline = !stage.endedAt && stage.timesOutAt ? ms(stage.timesOutAt) : null;
    for (const b of bars) { start = Math.min(start, b.from); end = Math.max(end, b.to); }
    if (deadline) end = Math.max(end, deadline);
    spans.push({ stage, bars, deadline });
  }
  const total = Math.max(end - start, 1000);
  const pct = (t) => `${(((t - start) / total) * 100).toFixed(3)}%`;
  const rows = spans.map(({ stage, bars, deadline }) => {
    const track = h("div", { class: "g-track" });
    for (const b of bars) {
      const text = `${stage.name} attempt ${b.attempt}: ${label(b.status)}, ${seconds((b.to - b.from) / 1000)}`;
      const bar = h("div", { class: `g-bar s-${b.status}${b.old ? " g-old" : ""}${b.live ? " g-live" : ""}`,
        title: text, role: "img", "aria-label": text });
      bar.style.left = pct(b.from); // CSSOM, not a style attribute: allowed by the CSP
      bar.style.width = `${Math.max(((b.to - b.from) / total) * 100, 0.5).toFixed(3)}%`;
      track.append(bar);
    }
    if (deadline) {
      const line = h("div", { class: "g-deadline", title: `${stage.name} times out at ${when(stage.timesOutAt)}`,
        role: "img", "aria-label": `${stage.name} times out at ${when(stage.timesOutAt)}` });
      line.style.left = pct(deadline);
      track.append(line);
    }
    return h("div", { class: "g-row" }, h("span", { class: "g-label", title: stage.name, text: stage.name }), track);
  });
  const axis = h("div", { class: "g-axis" });
  for (let i = 0; i <= 4; i += 1) {
    const at = (total * i) / 4000;
    const tick = h("span", { class: "g-tick", text: total < 10000 ? `+${at.toFixed(1)}s` : `+${seconds(at)}` });
    tick.style.left = `${i * 25}%`;
    axis.append(tick);
  }
  el.replaceChildren(...rows, h("div", { class: "g-row" }, h("span", {}), axis),
    h("p", { class: "g-legend", text: "Thick bars: current attempts; thin bars: earlier attempts; orange line: timeout deadline." }));
  const duration = $("run-duration");
  if (duration && run.duration !== null && !run.endedAt) duration.textContent = seconds(run.duration + since / 1000);
}

// ---- approvals inbox --------------------------------------------------------------------------

function approvalsPage() {
  document.title = "Approvals · stagetrack";
  const list = h("div", { id: "approvals" }, h("p", { class: "muted", text: "Loading…" }));
  show(h("h1", { text: "Waiting for approval" }), list);
  return live("api/approvals", (data) => {
    const items = data.items || [];
    if (!items.length) {
      list.replaceChildren(h("p", { class: "muted", text: "Nothing is waiting for you." }));
      return;
    }
    list.replaceChildren(h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Run", "Stage", "Branch", "Started by", "Waiting since", ""].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, items.map((item) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/runs/${encodeURIComponent(item.run.id)}`, text: `${item.run.pipeline} #${item.run.counter}` })),
        h("td", { text: [item.stage.name, approvalProgress(item.stage)].filter(Boolean).join(" · ") }),
        h("td", { text: item.run.branch || "—" }),
        h("td", { text: item.run.actor || "—" }),
        h("td", { text: when(item.waitingSince) }),
        h("td", {}, stageActions(item.stage, item.run.actor))))))));
  });
}

// ---- insights: figures from GET /api/insights (the server's aggregates), drawn as SVG ----------

const SVG = "http://www.w3.org/2000/svg";
const INSIGHT_FILTERS = ["pipeline", "stage", "from", "to", "granularity"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function percent(value) {
  return isNumber(value) ? `${(value * 100).toFixed(1)}%` : "—";
}

function count(value) {
  return isNumber(value) ? value.toLocaleString("en-US", { maximumFractionDigits: 2 }) : "—";
}

function day(iso) {
  return typeof iso === "string" ? iso.slice(0, 10) : "—";
}

// The window's bounds as the API gives them: UTC days (YYYY-MM-DD, shown as they are: the
// browser's time zone must not shift them), or an instant shown in UTC.
function utc(iso) {
  if (typeof iso !== "string") return "—";
  if (/^\d{4}-\d{2}-\d{2}$/.test(iso)) return iso;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function insightsPage(params) {
  document.title = "Insights · stagetrack";
  const query = new URLSearchParams();
  for (const key of INSIGHT_FILTERS) if (params.get(key)) query.set(key, params.get(key));
  const view = state.view;
  const body = h("div", { id: "insights", "aria-live": "polite" }, h("p", { class: "muted", text: "Loading…" }));
  show(h("h1", { text: "Insights" }), insightsFilters(query), body);
  call("GET", `api/insights${query.toString() ? `?${query}` : ""}`).then((answer) => {
    if (view !== state.view) return;
    body.replaceChildren(...insightsBody(answer, query));
    drawInsightCharts(answer);
  }).catch((error) => {
    if (view !== state.view) return;
    const text = error.status === 404 && !query.get("pipeline")
      ? "Insights are not available on this server yet."
      : error instanceof ApiError ? `${error.message} (${error.status})` : String(error.message || error);
    body.replaceChildren(h("p", { class: "error load-error", role: "alert", text }));
  });
  state.resize = () => { if (view === state.view && state.insights) drawInsightCharts(state.insights); };
}

window.addEventListener("resize", () => { if (state.resize) state.resize(); });

// The filters are a form whose submit rewrites the hash (#/insights?pipeline=…): the URL is the
// state, so a view can be bookmarked or shared, and Back returns to the previous filters.
function insightsFilters(query) {
  const field = (id, text, control) => h("div", { class: "field" }, h("label", { for: id, text }), control);
  const pipeline = h("select", { id: "f-pipeline", name: "pipeline" }, h("option", { value: "", text: "every pipeline" }));
  if (query.get("pipeline")) pipeline.append(h("option", { value: query.get("pipeline"), text: query.get("pipeline"), selected: true }));
  call("GET", "api/pipelines?runs=0&limit=100").then((page) => {
    for (const item of (page && page.items) || []) {
      if (item.name !== query.get("pipeline")) pipeline.append(h("option", { value: item.name, text: item.name }));
    }
  }).catch(() => {});
  const stage = h("input", { id: "f-stage", name: "stage", type: "text", list: "f-stages", autocomplete: "off",
                             value: query.get("stage") || "", placeholder: "every stage" });
  const from = h("input", { id: "f-from", name: "from", type: "date", value: day(query.get("from") || "") });
  const to = h("input", { id: "f-to", name: "to", type: "date", value: day(query.get("to") || "") });
  const granularity = h("select", { id: "f-granularity", name: "granularity" },
    ["day", "week"].map((g) => h("option", { value: g, text: g, selected: (query.get("granularity") || "day") === g })));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Insights filters", onsubmit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [key, control] of [["pipeline", pipeline], ["stage", stage], ["from", from], ["to", to], ["granularity", granularity]]) {
      if (control.value.trim()) next.set(key, control.value.trim());
    }
    const hash = `#/insights${next.toString() ? `?${next}` : ""}`;
    if (location.hash === hash) route(); else location.hash = hash;
  } },
  field("f-pipeline", "Pipeline", pipeline), field("f-stage", "Stage", stage), h("datalist", { id: "f-stages" }),
  field("f-from", "From", from), field("f-to", "To", to), field("f-granularity", "Granularity", granularity),
  h("button", { type: "submit", text: "Show" }));
  return form;
}

function tile(title, value, note) {
  return h("div", { class: "tile" }, h("span", { class: "tile-title", text: title }),
    h("span", { class: "tile-value", text: value }), note ? h("span", { class: "tile-note muted", text: note }) : null);
}

function insightsBody(answer, query) {
  state.insights = answer;
  const runs = answer.runs || {};
  const duration = answer.duration || {};
  const queue = answer.queue || {};
  const dora = answer.dora || {};
  const stages = (answer.stages || []).filter((x) => x && typeof x === "object");
  const names = $("f-stages");
  if (names) names.replaceChildren(...stages.map((x) => h("option", { value: x.name })));
  const scope = [query.get("pipeline") ? `pipeline ${query.get("pipeline")}` : "every pipeline you see",
    query.get("stage") ? `stage ${query.get("stage")}` : null].filter(Boolean).join(", ");
  const slowest = [...stages].sort((a, b) => ((b.duration || {}).p95 ?? -1) - ((a.duration || {}).p95 ?? -1)).slice(0, 5);
  const flakiest = stages.filter((x) => isNumber(x.flakyRate) && x.flakyRate > 0)
    .sort((a, b) => b.flakyRate - a.flakyRate).slice(0, 5);
  return [
    h("p", { class: "muted", id: "window", text: `${scope} · ${utc(answer.from)} – ${utc(answer.to)} · by ${answer.granularity || "day"}` }),
    h("section", { "aria-labelledby": "h-summary" }, h("h2", { id: "h-summary", text: "Runs" }),
      h("div", { class: "tiles", id: "summary" },
        tile("Runs", count(runs.total), `${count(runs.success)} success · ${count(runs.failure)} failure · ${count(runs.cancelled)} cancelled · ${count(runs.timedOut)} timed out`),
        tile("Success rate", percent(answer.successRate), "success / runs not cancelled"),
        tile("Duration p50", seconds(duration.p50), `p90 ${seconds(duration.p90)} · p95 ${seconds(duration.p95)} · mean ${seconds(duration.mean)}`),
        tile("Queue p50", seconds(queue.p50), `p95 ${seconds(queue.p95)}`),
        tile("MTTR", seconds(answer.mttrSeconds), "a failure to the next success"))),
    h("section", { "aria-labelledby": "h-dora" }, h("h2", { id: "h-dora", text: "DORA" }),
      h("div", { class: "tiles", id: "dora" },
        tile("Deployment frequency", `${count(dora.deploymentFrequency)} / day`),
        tile("Lead time p50", seconds((dora.leadTimeSeconds || {}).p50), "commit to deployed"),
        tile("Change failure rate", percent(dora.changeFailureRate)),
        tile("Time to restore p50", seconds((dora.timeToRestoreSeconds || {}).p50)))),
    chartFigure("c-duration", "Duration trend", "p50 line, p95 dashed, p50–p95 band, per bucket"),
    chartFigure("c-success", "Success rate", "success / runs not cancelled, per bucket"),
    chartFigure("c-throughput", "Throughput", "runs per bucket"),
    seriesTable(answer),
    stageTable("slowest", "Slowest stages", "by p95", slowest),
    stageTable("flakiest", "Flakiest stages", "failed, then passed on a retry", flakiest),
  ];
}

function chartFigure(id, title, note) {
  return h("figure", { class: "chart", id },
    h("figcaption", {}, h("strong", { text: title }), h("span", { class: "muted", text: ` · ${note}` })),
    h("div", { class: "plot" }));
}

function seriesTable(answer) {
  const rows = (answer.series || []).map((b) => h("tr", {},
    h("th", { scope: "row", text: day(b.start) }), h("td", { text: count(b.runs) }), h("td", { text: percent(b.successRate) }),
    h("td", { text: seconds(b.p50) }), h("td", { text: seconds(b.p95) })));
  return h("details", { class: "card" }, h("summary", { text: "The series as a table" }),
    h("div", { class: "scroll" }, h("table", { id: "series" },
      h("thead", {}, h("tr", {}, ["Start", "Runs", "Success rate", "p50", "p95"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows))));
}

function stageTable(id, title, note, stages) {
  const most = Math.max(1, ...stages.map((x) => (id === "slowest" ? (x.duration || {}).p95 : x.flakyRate) || 0));
  const rows = stages.map((x) => {
    const value = id === "slowest" ? (x.duration || {}).p95 : x.flakyRate;
    const bar = h("span", { class: `hbar ${id === "slowest" ? "hbar-time" : "hbar-flaky"}` });
    bar.style.width = `${Math.max(((value || 0) / most) * 100, 1).toFixed(1)}%`; // CSSOM: allowed by the CSP
    return h("tr", { "data-stage": x.name },
      h("th", { scope: "row", text: x.name }),
      h("td", { class: "bar-cell", "aria-hidden": "true" }, h("span", { class: "hbar-track" }, bar)),
      h("td", { text: count(x.runs) }), h("td", { text: percent(x.successRate) }),
      h("td", { text: seconds((x.duration || {}).p50) }), h("td", { text: seconds((x.duration || {}).p95) }),
      h("td", { text: percent(x.flakyRate) }), h("td", { text: count(x.retries) }));
  });
  return h("section", { "aria-labelledby": `h-${id}` }, h("h2", { id: `h-${id}` }, title, h("span", { class: "muted", text: ` · ${note}` })),
    rows.length ? h("div", { class: "scroll" }, h("table", { id },
      h("thead", {}, h("tr", {}, ["Stage", "", "Runs", "Success", "p50", "p95", "Flaky", "Retries"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows)))
      : h("p", { class: "muted", text: id === "flakiest" ? "No stage failed and then passed on a retry." : "No stage ran in this window." }));
}

// One SVG per chart, as wide as its box (redrawn on resize, so text keeps its size on a phone):
// buckets on x, values on y from 0 to the largest; a bucket without data leaves a gap.
function drawInsightCharts(answer) {
  const series = (answer.series || []).filter((b) => b && typeof b === "object");
  const label = (b) => day(b.start);
  plot("c-duration", series, {
    max: Math.max(0, ...series.map((b) => (isNumber(b.p95) ? b.p95 : isNumber(b.p50) ? b.p50 : 0))),
    format: seconds, band: [(b) => b.p50, (b) => b.p95], line: (b) => b.p50,
    describe: (b) => `${label(b)}: p50 ${seconds(b.p50)}, p95 ${seconds(b.p95)}, ${count(b.runs)} runs`,
    summary: `Run duration per ${answer.granularity || "day"}: p50 ${seconds((answer.duration || {}).p50)}, p95 ${seconds((answer.duration || {}).p95)} over the window`,
  });
  plot("c-success", series, {
    max: 1, format: percent, line: (b) => b.successRate,
    describe: (b) => `${label(b)}: success rate ${percent(b.successRate)} of ${count(b.runs)} runs`,
    summary: `Success rate per ${answer.granularity || "day"}: ${percent(answer.successRate)} over the window`,
  });
  plot("c-throughput", series, {
    max: 2 * Math.ceil(Math.max(1, ...series.map((b) => (isNumber(b.runs) ? b.runs : 0))) / 2), // whole ticks
    format: count, bars: (b) => b.runs,
    describe: (b) => `${label(b)}: ${count(b.runs)} runs`,
    summary: `Runs per ${answer.granularity || "day"}: ${count((answer.runs || {}).total)} in the window`,
  });
}

function plot(id, series, opts) {
  const figure = $(id);
  if (!figure) return;
  const box = figure.querySelector(".plot");
  const width = Math.max(280, Math.round(box.clientWidth || 600));
  const height = 180;
  const pad = { left: 64, right: 12, top: 10, bottom: 28 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const n = Math.max(series.length, 1);
  const step = w / n;
  const x = (i) => pad.left + step * i + step / 2;
  const value = opts.line || opts.bars;
  const empty = !(opts.max > 0) || !series.some((b) => isNumber(value(b)) && (opts.line || value(b) > 0));
  const max = empty ? 1 : opts.max;
  const y = (v) => pad.top + hgt - (v / max) * hgt;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": opts.summary, class: "plot-svg" });
  for (const frac of empty ? [0] : [0, 0.5, 1]) {
    svg.append(s("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(max * frac), y2: y(max * frac) }),
      s("text", { class: "tick", x: pad.left - 6, y: y(max * frac) + 4, "text-anchor": "end" }, opts.format(max * frac)));
  }
  const ticks = new Set([0, Math.floor((series.length - 1) / 2), series.length - 1]);
  series.forEach((b, i) => {
    if (ticks.has(i)) svg.append(s("text", { class: "tick", x: x(i), y: height - 8, "text-anchor": "middle" }, day(b.start)));
  });
  const runs = (points) => { // consecutive buckets with a value: one polyline each (gaps stay gaps)
    const out = [];
    let current = [];
    for (const p of points) {
      if (p) current.push(p); else if (current.length) { out.push(current); current = []; }
    }
    if (current.length) out.push(current);
    return out;
  };
  if (opts.bars && !empty) {
    series.forEach((b, i) => {
      const v = opts.bars(b);
      if (!isNumber(v)) return;
      const bw = Math.max(step * 0.7, 2);
      svg.append(s("rect", { class: "bar", x: x(i) - bw / 2, y: y(v), width: bw, height: Math.max(pad.top + hgt - y(v), 0) },
        s("title", {}, opts.describe(b))));
    });
  }
  if (opts.band) {
    const [low, high] = opts.band;
    const pts = series.map((b, i) => (isNumber(low(b)) && isNumber(high(b)) ? [x(i), y(low(b)), y(high(b))] : null));
    for (const part of runs(pts)) {
      const edge = part.length === 1 ? [[part[0][0] - step / 4, ...part[0].slice(1)], [part[0][0] + step / 4, ...part[0].slice(1)]] : part;
      const d = edge.map((p) => `${p[0].toFixed(1)},${p[2].toFixed(1)}`).concat(
        [...edge].reverse().map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`)).join(" ");
      svg.append(s("polygon", { class: "band", points: d }));
    }
    const p95 = series.map((b, i) => (isNumber(high(b)) ? [x(i), y(high(b))] : null));
    for (const part of runs(p95)) svg.append(s("polyline", { class: "line line-p95", points: part.map((p) => p.map((c) => c.toFixed(1)).join(",")).join(" ") }));
  }
  if (opts.line) {
    const pts = series.map((b, i) => (isNumber(opts.line(b)) ? [x(i), y(opts.line(b))] : null));
    for (const part of runs(pts)) svg.append(s("polyline", { class: "line", points: part.map((p) => p.map((c) => c.toFixed(1)).join(",")).join(" ") }));
    series.forEach((b, i) => {
      if (pts[i]) svg.append(s("circle", { class: "point", cx: pts[i][0], cy: pts[i][1], r: 3 }, s("title", {}, opts.describe(b))));
    });
  }
  if (empty) svg.append(s("text", { class: "tick", x: width / 2, y: height / 2, "text-anchor": "middle" }, "no runs in this window"));
  box.replaceChildren(svg);
}

// ---- confirmation dialog ----------------------------------------------------------------------

function confirmThen(options, action) {
  const dialog = $("confirm");
  $("confirm-title").textContent = options.title;
  $("confirm-text").textContent = options.text || "";
  const comment = $("confirm-comment");
  comment.value = "";
  comment.hidden = !options.comment;
  $("confirm-comment-label").hidden = !options.comment;
  $("confirm-comment-label").textContent = options.comment || "";
  const number = $("confirm-number"); // an optional whole number (a stop's grace period)
  number.value = "";
  number.hidden = !options.number;
  $("confirm-number-label").hidden = !options.number;
  $("confirm-number-label").textContent = options.number || "";
  if (options.number) number.placeholder = options.placeholder || "";
  const ok = $("confirm-ok");
  ok.textContent = options.ok;
  ok.className = options.danger ? "danger" : "";
  $("confirm-form").onsubmit = async (event) => {
    event.preventDefault();
    if (options.number && number.value !== "" && !number.checkValidity()) {
      number.reportValidity();
      return;
    }
    ok.disabled = true;
    try {
      await action(comment.value.trim() || null, number.value === "" ? null : Number(number.value));
      dialog.close();
      toast(`${options.ok}: done`);
      refresh();
    } catch (error) {
      dialog.close();
      toast(`${options.ok} failed: ${error.message}`);
    } finally {
      ok.disabled = false;
    }
  };
  $("confirm-cancel").onclick = () => dialog.close();
  dialog.showModal();
  (options.comment ? comment : ok).focus();
}

function refresh() {
  route(); // the page's poll starts again at once with its ETag
}

// ---- start ------------------------------------------------------------------------------------

async function start() {
  try {
    state.session = await call("GET", "api/session");
    signedIn();
  } catch {
    signedOut();
  }
}

start();
