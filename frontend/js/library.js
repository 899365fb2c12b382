// Your library: the signed-in person's projects, models with their versions, datasets and
// training runs, read from the catalog API (every list is the caller's own).
// Lists page with the API's cursors ("Show more"). A run's curves come from its metrics.json through a
// signed GET and are drawn with uPlot (js/chart.js, loaded on demand); a dataset opens in the
// workbench through a signed GET of its CSV; a ready version loads through js/cloud.js, and a PRO user
// deploys it (js/deploy.js, the deployments panel). Imported by
// js/cloud.js once someone signs in, so the first page load does not carry it.
import {cloud, loadVersion, openDatasetRecord, showWorkbench} from "./cloud.js";
import {bytes, dateTime, el, showMessage} from "./dom.js";
import {metric, number, percent} from "./format.js";
import {Problem, session} from "./session.js";
import {state} from "./state.js";

export const PAGE = 10; // items per page of each list
const NAMES = 100; // one page of every project, model and dataset: names for the rows, counts per project
const KEYS = ["projects", "models", "datasets", "jobs"];
const TITLES = {projects: "Projects", models: "Models", datasets: "Datasets", jobs: "Training runs"};
// What an empty list says: what is missing, then how to fill it.
const EMPTY = {
  projects: ["No projects yet.", "Train a model in the workbench and press Save to cloud: it goes into the project you name."],
  models: ["No saved models yet.", "Train a model and press Save to cloud."],
  datasets: ["No saved datasets yet.", "Open a CSV file in the Data panel, train on it and press Save to cloud: the CSV " +
    "is saved with the model (the XOR demo is built in and is not saved)."],
  jobs: ["No training runs yet.", "Train a model and press Save to cloud: the run's curves and final metrics are saved with it."],
};
const PLAN_NOTE = "You are on the free plan: what you saved stays listed here, and you can open, rename and delete " +
  "it. Saving new work needs PRO or a promo trial (see Billing).";

// --- DOM helpers ---------------------------------------------------------------------------------

const button = (text, label, onclick, props = {}) => {
  const b = el("button", {type: "button", textContent: text, ...props});
  if (label && label !== text) b.setAttribute("aria-label", label);
  b.addEventListener("click", () => onclick(b));
  return b;
};
const time = (iso) => el("time", {dateTime: iso, textContent: iso ? dateTime(iso) : "—"});
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const num = number; // the lab's one number format (js/format.js)
const pct = percent;
function parseJson(text) {
  try { return typeof text === "string" ? JSON.parse(text) : null; } catch { return null; }
}

// --- what the library holds ----------------------------------------------------------------------

const blank = () => ({items: [], cursor: null, loaded: false});
const data = {projects: blank(), models: blank(), datasets: blank(), jobs: blank()};
const names = {projects: new Map(), models: new Map(), datasets: new Map(), more: {}}; // id -> record (one page of 100)
let filter = ""; // a project id: only its models, datasets and runs; "" for all
let generation = 0; // bumped on every sign-in and sign-out: answers for an earlier session are dropped
let loads = 0; // bumped by every refresh: an answer overtaken by a later refresh (another filter) is dropped
let uid = null;
let openRun = null; // {id, chart} of the run shown below the runs table

const projectName = (id) => names.projects.get(id)?.name ?? data.projects.items.find((p) => p.id === id)?.name ?? "a project";
const modelName = (id) => names.models.get(id)?.name ?? data.models.items.find((m) => m.id === id)?.name ?? "a deleted model";
const runFinal = (job) => parseJson(job.metrics_json)?.final ?? null;
const runLabel = (job) => `${modelName(job.model_id)}${job.version ? ` v${job.version}` : ""}`;

// --- the section ---------------------------------------------------------------------------------

const root = document.getElementById("library");
const ui = {};

function mount() {
  ui.plan = el("p", {id: "library-plan", className: "hint", hidden: true, textContent: PLAN_NOTE});
  ui.filter = el("select", {id: "library-project"});
  ui.filter.addEventListener("change", () => {
    filter = ui.filter.value;
    closeRun();
    act(null, "top", () => refresh());
  });
  ui.refresh = button("Refresh", "Refresh the library", (b) => act(b, "top", () => refresh()));
  ui.top = message("library-message");
  ui.sections = {};
  for (const key of KEYS) {
    const id = `library-${key}`;
    const heading = el("h3", {id: `${id}-title`, textContent: TITLES[key], tabIndex: -1});
    const list = key === "datasets" || key === "jobs" ? table(key) : el("ul", {id, className: "lib-list"});
    const more = button(`Show more ${TITLES[key].toLowerCase()}`, null, (b) => act(b, key, () => showMore(key)),
      {className: "lib-more", hidden: true});
    const empty = el("p", {className: "lib-empty hint", hidden: true});
    const msg = message(`${id}-message`);
    const section = el("section", {className: "lib-section", "aria-labelledby": heading.id}, heading, msg, empty,
      list.box || list, more);
    ui.sections[key] = {section, heading, list: list.body || list, box: list.box, more, empty, msg};
  }
  ui.run = el("div", {id: "run-detail", className: "lib-run", role: "region", "aria-labelledby": "run-title", hidden: true});
  ui.compare = button("Compare selected runs (0)", null, (b) => act(b, "jobs", () => compareRuns()),
    {id: "compare-runs", className: "primary", disabled: true});
  ui.compareBar = el("div", {className: "lib-compare-bar", hidden: true}, ui.compare,
    el("p", {className: "hint", textContent: "Tick runs in the table to overlay their curves and rank them."}));
  ui.comparison = el("div", {id: "run-compare", className: "lib-run", role: "region", "aria-labelledby": "compare-title",
    hidden: true});
  ui.sections.jobs.more.after(ui.compareBar, ui.comparison, ui.run);
  root.replaceChildren(
    el("h2", {id: "library-title", textContent: "Your library"}),
    ui.plan,
    el("div", {className: "lib-toolbar"},
      el("label", {htmlFor: "library-project", textContent: "Project"}), ui.filter, ui.refresh),
    ui.top,
    ...KEYS.map((k) => ui.sections[k].section));
}

const message = (id) => el("p", {id, className: "lib-message", "aria-live": "polite"});

function table(key) {
  const heads = key === "datasets"
    ? ["Dataset", "Project", "Rows", "Columns", "Size", "Saved", "Actions"]
    : ["Model", "Dataset", "Loss (train / val)", "Accuracy (val)", "Epochs", "Saved", "Actions"];
  HEADS[key] = heads;
  // On a phone the rows become cards (CSS): explicit roles keep the table's semantics when they do.
  const body = el("tbody", {id: `library-${key}`, role: "rowgroup"});
  const box = el("div", {className: "lib-scroll", tabIndex: 0, role: "region", "aria-label": TITLES[key]},
    el("table", {className: "lib-table lib-cards", id: `library-${key}-table`, role: "table"},
      el("caption", {className: "visually-hidden", textContent: TITLES[key]}),
      el("thead", {role: "rowgroup"}, el("tr", {role: "row"},
        ...heads.map((h) => el("th", {scope: "col", role: "columnheader", textContent: h})))), body));
  return {box, body};
}

const HEADS = {};
// The deployments panel (js/deploy.js), loaded once someone signs in; a ready version's Deploy button calls it.
const deployments = () => import("./deploy.js");
function row(key, ...cells) { // one body row of a list table: each cell labelled by its column
  const tr = el("tr", {role: "row", tabIndex: -1}, ...cells);
  cells.forEach((cell, i) => {
    cell.setAttribute("role", cell.tagName === "TH" ? "rowheader" : "cell");
    if (cell.tagName === "TD") cell.dataset.label = HEADS[key][i];
  });
  return tr;
}

// A section's message ("top": the library's own); a problem is an alert, anything else is only polite.
const say = (where, text, problem = false) =>
  showMessage(where === "top" ? ui.top : ui.sections[where].msg, text, problem, null);

// Runs one action: its button disabled meanwhile, its outcome (or the problem's detail) told in the
// section's live region.
async function act(control, where, work) {
  if (control) control.disabled = true;
  say(where, "");
  try {
    const text = await work();
    if (text) say(where, text);
  } catch (err) {
    say(where, err instanceof Problem ? err.message : `That did not work: ${err.message}`, true);
  } finally {
    if (control) control.disabled = false;
  }
}

// --- loading -------------------------------------------------------------------------------------

async function fetchPage(key, cursor = null) {
  const params = new URLSearchParams({limit: String(PAGE)});
  if (cursor) params.set("cursor", cursor);
  if (key !== "projects" && filter) params.set("project_id", filter);
  if (key === "models") params.set("versions", "true"); // each model with its versions, in one request
  return session.request("GET", `/${key}?${params}`);
}

async function fetchNames() {
  const lists = await Promise.all(["projects", "models", "datasets"].map((k) => session.request("GET", `/${k}?limit=${NAMES}`)));
  return Object.fromEntries(["projects", "models", "datasets"].map((k, i) => [k, lists[i]]));
}

// Every list's first page (with the current filter) and the names, all at once.
async function refresh() {
  const mine = [generation, ++loads];
  const [pages, named] = await Promise.all([Promise.all(KEYS.map((k) => fetchPage(k))), fetchNames()]);
  if (mine[0] !== generation || mine[1] !== loads) return "";
  KEYS.forEach((k, i) => { data[k] = {items: pages[i].items, cursor: pages[i].next_cursor, loaded: true}; });
  for (const [k, page] of Object.entries(named)) {
    names[k] = new Map(page.items.map((r) => [r.id, r]));
    names.more[k] = Boolean(page.next_cursor);
  }
  render();
  return "";
}

async function showMore(key) {
  const mine = [generation, loads];
  const answer = await fetchPage(key, data[key].cursor);
  if (mine[0] !== generation || mine[1] !== loads) return "";
  const seen = new Set(data[key].items.map((r) => r.id));
  const added = answer.items.filter((r) => !seen.has(r.id));
  data[key].items.push(...added);
  data[key].cursor = answer.next_cursor;
  render();
  const first = added[0] && ui.sections[key].list.querySelector(`[data-id="${added[0].id}"]`);
  if (first) first.focus(); else ui.sections[key].heading.focus();
  return `${plural(added.length, "more item")} shown.`;
}

// --- rendering -----------------------------------------------------------------------------------

function render() {
  renderFilter();
  renderProjects();
  renderModels();
  renderDatasets();
  renderJobs();
  updateCompare();
  for (const key of KEYS) {
    const s = ui.sections[key];
    const {items, cursor, loaded} = data[key];
    s.more.hidden = !cursor;
    s.empty.hidden = !loaded || items.length > 0;
    const [what, how] = EMPTY[key];
    s.empty.textContent = `${filter && key !== "projects" ? `Nothing in ${projectName(filter)} yet.` : what} ${how}`;
    if (s.box) s.box.hidden = items.length === 0;
    s.list.hidden = items.length === 0;
  }
}

function renderFilter() {
  const projects = names.projects.size ? [...names.projects.values()] : data.projects.items;
  if (filter && !projects.some((p) => p.id === filter)) filter = "";
  ui.filter.replaceChildren(el("option", {value: "", textContent: "All projects"}),
    ...projects.map((p) => el("option", {value: p.id, textContent: p.name})));
  ui.filter.value = filter;
}

function counts(projectId) {
  const count = (k, word) => {
    const n = [...names[k].values()].filter((r) => r.project_id === projectId).length;
    return `${n}${names.more[k] ? "+" : ""} ${word}${n === 1 && !names.more[k] ? "" : "s"}`;
  };
  return `${count("models", "model")}, ${count("datasets", "dataset")}`;
}

function renderProjects() {
  ui.sections.projects.list.replaceChildren(...data.projects.items.map((p) => {
    const li = el("li", {className: "lib-item", tabIndex: -1});
    li.dataset.id = p.id;
    const show = () => li.replaceChildren(
      el("div", {className: "lib-head"}, el("strong", {className: "lib-name", textContent: p.name}),
        el("span", {className: "lib-meta"}, `${counts(p.id)} · created `, time(p.created_at))),
      el("div", {className: "lib-actions"},
        button("Rename", `Rename ${p.name}`, () => renameForm(li, p, show)),
        button("Delete", `Delete ${p.name}`, (b) => act(b, "projects", () => deleteProject(p)))));
    show();
    return li;
  }));
}

function renameForm(li, project, cancel) {
  const input = el("input", {id: `rename-${project.id}`, value: project.name, maxLength: 100, required: true,
    autocomplete: "off"});
  const save = el("button", {type: "submit", textContent: "Save name"});
  const back = () => { cancel(); li.querySelector("button")?.focus(); };
  const form = el("form", {className: "lib-rename"},
    el("label", {htmlFor: input.id, textContent: `New name for ${project.name}`}), input,
    el("span", {className: "lib-actions"}, save, button("Cancel", `Cancel renaming ${project.name}`, back)));
  form.addEventListener("keydown", (event) => { if (event.key === "Escape") back(); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name) { say("projects", "A project needs a name.", true); input.focus(); return; }
    act(save, "projects", async () => {
      const renamed = await session.request("PATCH", `/projects/${project.id}`, {name});
      const update = (p) => (p.id === renamed.id ? {...p, ...renamed} : p);
      data.projects.items = data.projects.items.map(update);
      if (names.projects.has(renamed.id)) names.projects.set(renamed.id, update(names.projects.get(renamed.id)));
      cloud.dispatchEvent(new CustomEvent("changed", {detail: {kind: "project", id: renamed.id, action: "rename"}}));
      render();
      ui.sections.projects.list.querySelector(`[data-id="${renamed.id}"] button`)?.focus();
      return `Renamed ${project.name} to ${renamed.name}.`;
    });
  });
  li.replaceChildren(form);
  input.focus();
  input.select();
}

function forget(key, predicate) {
  data[key].items = data[key].items.filter((r) => !predicate(r));
  for (const [id, r] of names[key] || []) if (predicate(r)) names[key].delete(id);
}

async function deleteProject(p) {
  if (!confirm(`Delete the project “${p.name}” with its models, datasets and training runs, and every file ` +
    "saved for them? This cannot be undone.")) return "";
  await session.request("DELETE", `/projects/${p.id}`);
  forget("projects", (r) => r.id === p.id);
  for (const key of ["models", "datasets", "jobs"]) forget(key, (r) => r.project_id === p.id);
  if (openRun && !data.jobs.items.some((j) => j.id === openRun.id)) closeRun();
  cloud.dispatchEvent(new CustomEvent("changed", {detail: {kind: "project", id: p.id, action: "delete"}}));
  if (filter === p.id) { // the lists showed only that project: show everything again
    filter = "";
    await refresh();
  }
  render();
  ui.sections.projects.heading.focus();
  return `Deleted ${p.name} and everything in it.`;
}

function renderModels() {
  ui.sections.models.list.replaceChildren(...data.models.items.map((m) => {
    const versions = m.versions || [];
    const li = el("li", {className: "lib-item", tabIndex: -1},
      el("div", {className: "lib-head"}, el("strong", {className: "lib-name", textContent: m.name}),
        el("span", {className: "lib-meta"}, `${projectName(m.project_id)} · ${plural(versions.length, "version")} · created `,
          time(m.created_at))),
      versions.length ? el("ul", {className: "lib-versions", "aria-label": `Versions of ${m.name}`}, ...versions.map((v) => {
        const item = el("li", {},
          el("span", {className: "lib-version", textContent: `v${v.version}`}),
          el("span", {className: "lib-status", textContent: v.status === "ready" ? "ready" : v.status === "failed" ? "failed" : "pending"}),
          el("span", {className: "lib-meta"}, v.status === "ready" ? `${bytes(v.size_bytes)} · saved `
            : v.status === "failed" ? `${v.failure || "an upload was refused"} · ` : "files not all uploaded · ",
          time(v.created_at)),
          v.status === "ready"
            ? button(`Load v${v.version}`, `Load v${v.version} of ${m.name}`, (b) => act(b, "models", async () => {
              const came = await loadVersion(m, v.version);
              showWorkbench();
              const extras = [came.run && "its training run", came.dataset && "its dataset"].filter(Boolean);
              return `Loaded ${m.name} version ${v.version} into the workbench${extras.length ? ` with ${extras.join(" and ")}` : ""}: ` +
                "its prediction form is under Training.";
            }))
            : null,
          v.status === "ready" && session.me?.subscription?.plan === "pro"
            ? button(`Deploy v${v.version}`, `Deploy v${v.version} of ${m.name}`, (b) => act(b, "models", async () => {
              await (await deployments()).deploy(m, v.version);
              return "";
            }), {className: "primary small"})
            : null,
          v.status === "ready" ? button(v.notes ? "Edit notes" : "Add notes",
            `${v.notes ? "Edit" : "Add"} notes for v${v.version} of ${m.name}`, () => notesForm(item, m, v)) : null,
          v.notes ? el("p", {className: "lib-notes", textContent: v.notes}) : null);
        item.dataset.status = v.status;
        item.dataset.version = String(v.version);
        return item;
      })) : el("p", {className: "hint", textContent: "No version saved yet."}),
      el("div", {className: "lib-actions"},
        button("Delete model", `Delete model ${m.name}`, (b) => act(b, "models", () => deleteModel(m)))));
    li.dataset.id = m.id;
    return li;
  }));
}

// The notes of a version: a short text saved with it (what changed, why it is better).
function notesForm(item, m, v) {
  const id = `notes-${m.id}-${v.version}`;
  const input = el("input", {id, value: v.notes || "", maxLength: 500, autocomplete: "off"});
  const save = el("button", {type: "submit", className: "primary", textContent: "Save notes"});
  const back = () => { render(); ui.sections.models.list.querySelector(`[data-id="${m.id}"] [data-version="${v.version}"] button:last-of-type`)?.focus(); };
  const form = el("form", {className: "lib-notes-form"},
    el("label", {htmlFor: id, textContent: `Notes for v${v.version} of ${m.name}`}), input,
    el("span", {className: "lib-actions"}, save, button("Cancel", `Cancel the notes for v${v.version}`, back)));
  form.addEventListener("keydown", (event) => { if (event.key === "Escape") back(); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(save, "models", async () => {
      const updated = await session.request("PATCH", `/models/${m.id}/versions/${v.version}`, {notes: input.value.trim()});
      v.notes = updated.notes;
      back();
      return updated.notes ? `Saved the notes for ${m.name} v${v.version}.` : `Removed the notes for ${m.name} v${v.version}.`;
    });
  });
  item.querySelector(".lib-notes")?.remove();
  item.append(form);
  input.focus();
}

async function deleteModel(m) {
  if (!confirm(`Delete the model “${m.name}” with all its versions and their files? Its training runs stay ` +
    "listed. This cannot be undone.")) return "";
  await session.request("DELETE", `/models/${m.id}`);
  forget("models", (r) => r.id === m.id);
  cloud.dispatchEvent(new CustomEvent("changed", {detail: {kind: "model", id: m.id, action: "delete"}}));
  render();
  ui.sections.models.heading.focus();
  return `Deleted the model ${m.name}.`;
}

function renderDatasets() {
  ui.sections.datasets.list.replaceChildren(...data.datasets.items.map((d) => {
    const ready = d.status === "ready" && d.object;
    const tr = row("datasets",
      el("th", {scope: "row", className: "lib-name", textContent: d.name}),
      el("td", {textContent: projectName(d.project_id)}),
      el("td", {textContent: ready ? String(d.row_count ?? "—") : d.status === "failed" ? (d.failure || "upload refused") : "upload not recorded"}),
      el("td", {textContent: ready ? String(d.columns.length) : "—"}),
      el("td", {textContent: ready ? bytes(d.size_bytes) : "—"}),
      el("td", {}, time(d.created_at)),
      el("td", {className: "lib-actions"},
        button("Open in workbench", `Open in workbench: ${d.name}`, (b) => act(b, "datasets", () => openDataset(d)),
          {disabled: !ready}),
        button("Delete", `Delete dataset ${d.name}`, (b) => act(b, "datasets", () => deleteDataset(d)))));
    tr.dataset.id = d.id;
    tr.dataset.columns = JSON.stringify(d.columns);
    return tr;
  }));
}

async function openDataset(d) {
  const dataset = await openDatasetRecord(d);
  showWorkbench();
  return `Opened ${d.name} in the workbench's Data panel: ${plural(dataset.rows.length, "row")}, ` +
    `${plural(dataset.columns.length, "column")}.`;
}

async function deleteDataset(d) {
  if (!confirm(`Delete the dataset “${d.name}” and its CSV file? This cannot be undone.`)) return "";
  await session.request("DELETE", `/datasets/${d.id}`);
  forget("datasets", (r) => r.id === d.id);
  render();
  ui.sections.datasets.heading.focus();
  return `Deleted the dataset ${d.name}.`;
}

function renderJobs() {
  ui.sections.jobs.list.replaceChildren(...data.jobs.items.map((j) => {
    const final = runFinal(j);
    const dataset = j.dataset_id ? names.datasets.get(j.dataset_id)?.name ?? "a deleted dataset" : "not saved";
    const label = `${j.name || "training run"} (${runLabel(j)})`;
    const named = j.name && !/^training run of version \d+$/.test(j.name); // the default name only repeats the version
    const pick = el("input", {type: "checkbox", id: `compare-${j.id}`, checked: picked.has(j.id), disabled: !final});
    pick.addEventListener("change", () => { if (pick.checked) picked.add(j.id); else picked.delete(j.id); updateCompare(); });
    const tr = row("jobs",
      el("th", {scope: "row", className: "lib-name"},
        el("label", {className: "lib-pick", htmlFor: pick.id}, pick,
          el("span", {}, runLabel(j), el("span", {className: "visually-hidden", textContent: ": compare"}))),
        named ? el("small", {textContent: j.name}) : null),
      el("td", {textContent: dataset}),
      final ? el("td", {className: "lib-num", textContent: `${num(final.loss)} / ${num(final.val_loss)}`})
        : el("td", {textContent: "not recorded yet"}),
      el("td", {className: "lib-num", textContent: final && "acc" in final ? pct(final.val_acc ?? final.acc) : "—"}),
      el("td", {className: "lib-num", textContent: j.epoch_count ? String(j.epoch_count) : "—"}),
      el("td", {}, time(j.created_at)),
      el("td", {className: "lib-actions"},
        button("Show", `Show ${label}`, (b) => act(b, "jobs", () => showRun(j)), {disabled: !final,
          "aria-expanded": String(openRun?.id === j.id), "aria-controls": "run-detail"}),
        button("Delete", `Delete ${label}`, (b) => act(b, "jobs", () => deleteJob(j, label)))));
    tr.dataset.id = j.id;
    if (final) tr.dataset.final = JSON.stringify(final);
    return tr;
  }));
}

async function deleteJob(j, label) {
  if (!confirm(`Delete ${label} and its metrics.json? This cannot be undone.`)) return "";
  await session.request("DELETE", `/jobs/${j.id}`);
  forget("jobs", (r) => r.id === j.id);
  if (openRun?.id === j.id) closeRun();
  render();
  ui.sections.jobs.heading.focus();
  return `Deleted ${label}.`;
}

// --- one run: its curves, final metrics and confusion matrix --------------------------------------

function closeRun({focus = false} = {}) {
  const id = openRun?.id;
  openRun?.chart?.destroy();
  openRun = null;
  if (!ui.run) return;
  ui.run.hidden = true;
  ui.run.replaceChildren();
  ui.sections.jobs.list.querySelectorAll("[aria-controls=run-detail]").forEach((b) => b.setAttribute("aria-expanded", "false"));
  if (focus && id) ui.sections.jobs.list.querySelector(`[data-id="${id}"] [aria-controls=run-detail]`)?.focus();
}

async function showRun(j) {
  const object = `users/${uid}/projects/${j.project_id}/jobs/${j.id}/metrics.json`;
  const {url} = await session.request("GET", `/signed/download?object=${encodeURIComponent(object)}`);
  const res = await fetch(url);
  if (!res.ok) throw new Problem(`The run's metrics.json could not be downloaded (HTTP ${res.status}); try again.`);
  const metrics = await res.json();
  closeRun();
  openRun = {id: j.id, chart: null};
  const classification = metrics.task !== "regression";
  const p = metrics.params || {};
  const title = el("h4", {id: "run-title", tabIndex: -1, textContent: `Run: ${runLabel(j)}`});
  const facts = [`${plural(metrics.epochs.length, "epoch")} of ${p.epochs ?? "?"}`, metrics.task, `on ${metrics.backend}`,
    p.optimizer && `${p.optimizer === "sgd" ? "SGD" : "Adam"}, learning rate ${p.learning_rate}`,
    p.batch_size && `batch ${p.batch_size}`, p.seed !== undefined && `seed ${p.seed}`,
    p.param_count && `${p.param_count.toLocaleString("en-US")} parameters`].filter(Boolean);
  const chartBox = el("div", {id: "run-chart", className: "charts"});
  ui.run.replaceChildren(
    el("div", {className: "lib-run-head"}, title,
      button("Close", "Close the run", () => closeRun({focus: true}))),
    el("p", {className: "hint"}, `${facts.join(" · ")}. Trained `, time(metrics.started_at), "."),
    chartBox,
    scroll(metricsTable(metrics.final, metrics.task, p.target), "Final metrics"),
    classification && metrics.final.confusion_matrix
      ? scroll(confusionTable(metrics.final.confusion_matrix, p.labels), "Confusion matrix") : null);
  ui.run.dataset.job = j.id;
  ui.run.hidden = false;
  ui.sections.jobs.list.querySelector(`[data-id="${j.id}"] [aria-controls=run-detail]`)?.setAttribute("aria-expanded", "true");
  title.focus();
  const {createChart} = await import("./chart.js");
  const chart = await createChart(chartBox, {classification});
  if (openRun?.id !== j.id) { chart.destroy(); return ""; } // closed or replaced meanwhile
  openRun.chart = chart;
  metrics.epochs.forEach((row) => chart.add(row));
  chart.flush();
  return `Showing ${runLabel(j)}: ${plural(metrics.epochs.length, "epoch")}.`;
}

// --- several runs: their curves overlaid and their parameters side by side (js/compare.js) ----------

const picked = new Set(); // ids of the runs ticked for comparison
let comparison = null; // {destroy()} of the comparison shown

function updateCompare() {
  for (const id of picked) if (!data.jobs.items.some((j) => j.id === id)) picked.delete(id);
  ui.compare.disabled = picked.size < 2;
  ui.compare.textContent = `Compare selected runs (${picked.size})`;
  ui.compareBar.hidden = data.jobs.items.filter((j) => runFinal(j)).length < 2;
}

function closeComparison({focus = false} = {}) {
  comparison?.destroy();
  comparison = null;
  ui.comparison.hidden = true;
  ui.comparison.replaceChildren();
  if (focus) ui.compare.focus();
}

async function fetchMetrics(j) {
  const object = `users/${uid}/projects/${j.project_id}/jobs/${j.id}/metrics.json`;
  const {url} = await session.request("GET", `/signed/download?object=${encodeURIComponent(object)}`);
  const res = await fetch(url);
  if (!res.ok) throw new Problem(`The metrics.json of ${runLabel(j)} could not be downloaded (HTTP ${res.status}); try again.`);
  return res.json();
}

async function compareRuns() {
  const jobs = data.jobs.items.filter((j) => picked.has(j.id));
  if (jobs.length < 2) return "Tick two or more runs to compare them.";
  const all = await Promise.all(jobs.map(fetchMetrics));
  closeComparison();
  const runs = jobs.map((j, i) => ({id: j.id, label: runLabel(j), model: modelName(j.model_id), metrics: all[i]}));
  const title = el("h4", {id: "compare-title", tabIndex: -1, textContent: `Comparing ${plural(runs.length, "run")}`});
  ui.comparison.replaceChildren(el("div", {className: "lib-run-head"}, title,
    button("Close", "Close the comparison", () => closeComparison({focus: true}))));
  ui.comparison.hidden = false;
  title.focus();
  const {showComparison} = await import("./compare.js");
  comparison = await showComparison(ui.comparison, runs);
  return `Comparing ${runs.map((r) => r.label).join(", ")}.`;
}

const scroll = (node, label) => el("div", {className: "lib-scroll", tabIndex: 0, role: "region", "aria-label": label}, node);

function metricsTable(final, task, target) {
  const rows = [];
  const pair = (name, key) => { if (key in final) rows.push([name, final[key], final[`val_${key}`], (v) => metric(key, v)]); };
  const units = target ? ` (${target} units)` : "";
  if (task === "regression") [[`RMSE${units}`, "rmse"], [`MAE${units}`, "mae"], ["R²", "r2"]].forEach(([n, k]) => pair(n, k));
  else [["Accuracy", "acc"], ["ROC AUC", "auc"]].forEach(([n, k]) => pair(n, k));
  pair("Loss", "loss");
  const t = el("table", {id: "run-metrics", className: "lib-table"},
    el("caption", {textContent: `Final metrics (weights of epoch ${final.best_epoch ?? "?"})`}),
    el("thead", {}, el("tr", {}, ...["Metric", "Training", "Validation"].map((h) => el("th", {scope: "col", textContent: h})))),
    el("tbody", {}, ...rows.map(([name, train, val, f]) => el("tr", {}, el("th", {scope: "row", textContent: name}),
      el("td", {className: "lib-num", textContent: f(train)}), el("td", {className: "lib-num", textContent: f(val)})))));
  t.dataset.final = JSON.stringify(final);
  return t;
}

function confusionTable(matrix, labels) {
  const name = (i) => String(Array.isArray(labels) && labels.length === matrix.length ? labels[i] : i);
  const t = el("table", {id: "run-confusion", className: "lib-table lib-confusion"},
    el("caption", {textContent: "Confusion matrix on the validation rows (rows: actual, columns: predicted)"}),
    el("thead", {}, el("tr", {}, el("td"), ...matrix.map((_, i) => el("th", {scope: "col", textContent: `predicted ${name(i)}`})))),
    el("tbody", {}, ...matrix.map((row, i) => el("tr", {}, el("th", {scope: "row", textContent: `actual ${name(i)}`}),
      ...row.map((n, k) => el("td", {className: `lib-num ${i === k ? "hit" : n ? "miss" : ""}`, textContent: String(n)}))))));
  t.dataset.matrix = JSON.stringify(matrix);
  return t;
}

// --- who is signed in ----------------------------------------------------------------------------

function reset() {
  closeRun();
  closeComparison();
  picked.clear();
  for (const key of KEYS) data[key] = blank();
  for (const k of ["projects", "models", "datasets"]) names[k] = new Map();
  names.more = {};
  filter = "";
  KEYS.forEach((k) => say(k, ""));
  say("top", "");
  render();
}

if (root && !root.childElementCount) {
  mount();
  render();
  session.onChange((me) => {
    root.hidden = !me;
    if (me) ui.plan.hidden = me.subscription?.plan === "pro";
    if ((me?.uid ?? null) === uid) { // the same person (a plan change): the lists still hold, Deploy follows the plan
      if (me) renderModels();
      return;
    }
    generation++;
    uid = me?.uid ?? null;
    reset();
    if (me) {
      act(ui.refresh, "top", () => refresh());
      deployments(); // the deployments panel (js/deploy.js): loaded only for a signed-in person
    }
  });
  cloud.addEventListener("saved", () => act(ui.refresh, "top", () => refresh()));
}
