// The deployments panel: a saved model version answering predictions over HTTPS (docs/serving.md).
// Each of the signed-in person's deployments with its predict URL, ready-to-copy calls (js/snippets.js)
// filled with a row of the model's dataset, the version it serves (switched with no downtime), its public
// share page and embed code, its description; and the API keys that call predict URLs (a new key is
// shown once). Deployments need PRO: a free account sees why and how to upgrade. Loaded by
// js/library.js once someone signs in, so the first page load carries neither it nor its deploy.css.
import {$, dateTime, el, showMessage} from "./dom.js";
import {Problem, session} from "./session.js";
import {exampleInstance, snippets} from "./snippets.js";
import {state} from "./state.js";

const EXPIRY_DAYS = [30, 90, 365]; // the key form's choices besides "never"
const HEAD_BYTES = 64 * 1024; // of a saved dataset's CSV, for its first row
const FILLED = {
  workbench: "Filled with the first row of the dataset in the workbench.",
  saved: "Filled with the first row of the dataset this version was trained on.",
};
const PRO_NOTE = "Deployments and API keys need PRO or a promo trial: a deployed model answers predictions over " +
  "HTTPS, from your code or a public share page.";
const PAUSED_NOTE = "Your deployments below are paused: their predict URLs answer 402 and their share pages are " +
  "closed until PRO resumes. Nothing was deleted.";

const root = $("deployments");
const ui = {};
let deployments = []; // GET /deployments: the caller's own
let keys = []; // GET /api-keys
const models = new Map(); // model id -> {id, name, project_id, versions}
const instances = new Map(); // "<model id>/<version>" -> the preprocessor its snippets' instance follows
const savedRows = new Map(); // "<model id>/<version>" -> its saved dataset's first row (a promise; null: none)
const codeOpen = new Map(); // deployment id -> whether its code is shown (kept when the cards are drawn again)
let uid = null;
let generation = 0; // bumped at every sign-in and sign-out: answers for an earlier session are dropped
let edits = 0; // bumped before and after every change made here: a list read across one is read again

// --- small helpers -------------------------------------------------------------------------------

const button = (text, label, onclick, props = {}) => {
  const b = el("button", {type: "button", textContent: text, ...props});
  if (label && label !== text) b.setAttribute("aria-label", label);
  b.addEventListener("click", () => onclick(b));
  return b;
};
const time = (iso, none = "never") => (iso ? el("time", {dateTime: iso, textContent: dateTime(iso)}) : none);
const pro = () => session.me?.subscription?.plan === "pro";
const modelName = (id) => models.get(id)?.name ?? "a deleted model";
const shareUrl = (d) => `${location.origin}/m/${d.id}`;
const embedCode = (d) => `<iframe src="${shareUrl(d)}" title="${modelName(d.model_id).replaceAll('"', "&quot;")}" ` +
  'width="480" height="560" style="border:0"></iframe>';

const say = (text, problem = false) => showMessage(ui.message, text, problem, null);
const sayKeys = (text, problem = false) => showMessage(ui.keyMessage, text, problem, null);

// Runs one action with its control disabled, its outcome (or the API's problem detail) told in `tell`.
async function act(control, tell, work) {
  if (control) control.disabled = true;
  tell("");
  try {
    const text = await work();
    if (text) tell(text);
  } catch (err) {
    tell(err instanceof Problem ? err.message : `That did not work: ${err.message}`, true);
  } finally {
    if (control) control.disabled = false;
  }
}

// Copies `text`; the button says so for a moment and `tell` (the nearest message) announces it.
async function copy(text, control, what, tell = say) {
  try {
    await navigator.clipboard.writeText(text);
    control.textContent = "Copied";
    setTimeout(() => { control.textContent = "Copy"; }, 2000);
    tell(`${what} copied.`);
  } catch {
    tell(`Your browser did not allow copying: select the ${what.toLowerCase()} and copy it yourself.`, true);
  }
}

// A read-only value with its Copy button (the predict URL, the share link, the new key).
function copyRow(id, label, value, tell = say) {
  const what = label;
  const input = el("input", {id, value, readOnly: true, spellcheck: false, className: "dep-value"});
  input.addEventListener("focus", () => input.select());
  const b = button("Copy", `Copy the ${what.toLowerCase()}`, () => copy(value, b, what, tell));
  return el("div", {className: "dep-field"}, el("label", {htmlFor: id, textContent: label}),
    el("div", {className: "dep-copy"}, input, b));
}

// --- the section ---------------------------------------------------------------------------------

function mount() {
  ui.plan = el("div", {id: "deploy-plan", className: "dep-plan", hidden: true},
    el("p", {textContent: PRO_NOTE}),
    el("p", {id: "deploy-paused", hidden: true, textContent: PAUSED_NOTE}),
    el("a", {className: "button primary", href: "#billing", textContent: "Go PRO to deploy"}));
  ui.message = el("p", {id: "deploy-message", className: "lib-message", "aria-live": "polite"});
  ui.empty = el("p", {id: "deploy-empty", className: "hint", hidden: true,
    textContent: "Nothing deployed yet. In Your library, press Deploy beside a ready version of a model."});
  ui.list = el("ul", {id: "deployments-list", className: "dep-list"});
  ui.keyMessage = el("p", {id: "keys-message", className: "lib-message", "aria-live": "polite"});
  ui.keyForm = keyForm();
  ui.newKey = el("div", {id: "new-key", className: "dep-new-key", role: "region", "aria-labelledby": "new-key-title",
    hidden: true});
  ui.keys = el("tbody", {id: "keys-list"});
  ui.keysBox = el("div", {className: "lib-scroll", tabIndex: 0, role: "region", "aria-label": "API keys"},
    el("table", {className: "lib-table lib-cards", id: "keys-table"},
      el("caption", {className: "visually-hidden", textContent: "API keys"}),
      el("thead", {}, el("tr", {}, ...KEY_HEADS.map((h) => el("th", {scope: "col", textContent: h})))), ui.keys));
  ui.noKeys = el("p", {className: "hint", hidden: true, textContent: "No API keys yet: name one above and press Create key."});
  ui.refresh = button("Refresh", "Refresh the deployments and keys", (b) => act(b, say, () => refresh()),
    {className: "small"});
  root.replaceChildren(
    el("div", {className: "dep-top"}, el("h2", {id: "deployments-title", tabIndex: -1, textContent: "Deployments"}),
      ui.refresh),
    el("p", {className: "hint", textContent: "A deployed model version answers predictions at its URL, called with " +
      "an API key; a public one also has a share page anyone can open or embed."}),
    ui.plan, ui.message, ui.empty, ui.list,
    ui.keySection = el("section", {className: "lib-section", "aria-labelledby": "keys-title"},
      el("h3", {id: "keys-title", tabIndex: -1, textContent: "API keys"}),
      el("p", {className: "hint", textContent: "Your code sends a key with each prediction (Authorization: Bearer). " +
        "Keep keys out of your code: the snippets read one from MLLAB_API_KEY."}),
      ui.keyMessage, ui.keyForm, ui.newKey, ui.noKeys, ui.keysBox));
}

// --- loading -------------------------------------------------------------------------------------

async function refresh() {
  const mine = generation;
  const seen = edits;
  const [deps, listed, named] = await Promise.all([session.request("GET", "/deployments"),
    session.request("GET", "/api-keys"), session.request("GET", "/models?limit=100&versions=true")]);
  if (mine !== generation) return "";
  for (const m of named.items) models.set(m.id, m);
  // A deployed model beyond the first page of models: its own record (for its name and versions).
  const missing = [...new Set(deps.items.map((d) => d.model_id))].filter((id) => !models.has(id));
  const extra = await Promise.all(missing.map((id) => session.request("GET", `/models/${id}`).catch(() => null)));
  extra.filter(Boolean).forEach((m) => models.set(m.id, m));
  if (mine !== generation) return "";
  if (seen !== edits) return refresh(); // a deploy, change or key made meanwhile may be missing from these lists
  deployments = deps.items;
  keys = listed.items;
  render();
  return "";
}

// The snippets' instance: a row of the model's dataset as the model reads it. First the dataset in the
// workbench when it has the model's features (the one being worked on); else the dataset the version was
// trained on, when it was saved with its run; else each feature null (the server imputes it).
async function instanceFor(d) {
  const key = `${d.model_id}/${d.version}`;
  const model = models.get(d.model_id);
  if (!model) return {instance: {}, from: null}; // the model was deleted: nothing to read the features from
  if (!instances.has(key)) {
    const object = `users/${uid}/projects/${model.project_id}/models/${model.id}/versions/${d.version}/model.json`;
    const {url} = await session.request("GET", `/signed/download?object=${encodeURIComponent(object)}`);
    const res = await fetch(url);
    if (!res.ok) throw new Problem(`The model's files could not be read (HTTP ${res.status}); try again.`);
    instances.set(key, (await res.json()).userDefinedMetadata?.preprocessor ?? null);
  }
  const pre = instances.get(key);
  if (!pre) return {instance: {}, from: null};
  const fits = (row, names) => row && pre.features.every((f) => names.has(f.name));
  const rows = state.dataset?.rows || [];
  if (fits(rows[0], new Set((state.dataset?.columns || []).map((c) => c.name)))) {
    return {instance: exampleInstance(pre, rows[0]), from: "workbench"};
  }
  if (!savedRows.has(key)) savedRows.set(key, firstSavedRow(model, d.version).catch(() => null));
  const saved = await savedRows.get(key);
  if (fits(saved, new Set(Object.keys(saved || {})))) return {instance: exampleInstance(pre, saved), from: "saved"};
  return {instance: exampleInstance(pre, {}), from: null};
}

// The first row of the dataset a version was trained on (its training run names it), read from the head
// of its CSV (a ranged signed GET: the file may be large); null when none was saved.
async function firstSavedRow(model, version) {
  const {items} = await session.request("GET", `/jobs?model_id=${model.id}&limit=100`);
  const job = items.find((j) => j.version === version && j.dataset_id);
  if (!job) return null;
  const dataset = await session.request("GET", `/datasets/${job.dataset_id}`);
  if (dataset.status !== "ready" || !dataset.object) return null;
  const {url} = await session.request("GET", `/signed/download?object=${encodeURIComponent(dataset.object)}`);
  const res = await fetch(url, {headers: {Range: `bytes=0-${HEAD_BYTES - 1}`}});
  if (!res.ok) return null;
  let text = await res.text();
  if (res.status === 206) text = text.slice(0, text.lastIndexOf("\n") + 1); // whole lines only
  const {parseCsv} = await import("./data.js");
  return (await parseCsv(text, {delimiter: ","})).rows[0] ?? null; // saved datasets are comma-separated
}

// --- rendering -----------------------------------------------------------------------------------

function render() {
  const isPro = pro();
  ui.plan.hidden = isPro;
  $("deploy-paused").hidden = isPro || deployments.length === 0;
  ui.keyForm.hidden = !isPro;
  ui.keySection.hidden = !isPro && keys.length === 0; // a free account keeps its old keys listed, to revoke them
  ui.empty.hidden = deployments.length > 0 || !isPro;
  ui.list.replaceChildren(...deployments.map(card));
  renderKeyForm();
  renderKeys();
}

function card(d) {
  const model = models.get(d.model_id);
  const title = el("h3", {id: `dep-${d.id}-title`, className: "dep-title", tabIndex: -1},
    `${modelName(d.model_id)} `, el("span", {className: "dep-version", textContent: `v${d.version}`}));
  const li = el("li", {className: "dep-card", "aria-labelledby": title.id},
    el("div", {className: "dep-head"}, title,
      el("span", {className: `dep-badge${d.public ? " public" : ""}`, textContent: d.public ? "Public" : "Private"}),
      pro() ? null : el("span", {className: "dep-badge paused", textContent: "Paused"}),
      el("span", {className: "lib-meta"}, "deployed ", time(d.created_at, "—"))),
    copyRow(`dep-${d.id}-url`, "Predict URL", d.predict_url),
    el("div", {className: "dep-controls"}, versionSelect(d, model), publicSwitch(d)),
    d.public ? shareBlock(d) : null,
    describeForm(d),
    snippetBlock(d),
    el("div", {className: "lib-actions"},
      button("Delete deployment", `Delete the deployment of ${modelName(d.model_id)}`, (b) => act(b, say, () => remove(d)),
        {className: "danger"})));
  li.dataset.id = d.id;
  li.dataset.version = String(d.version);
  return li;
}

function versionSelect(d, model) {
  const ready = (model?.versions || []).filter((v) => v.status === "ready").map((v) => v.version);
  if (!ready.includes(d.version)) ready.push(d.version);
  const select = el("select", {id: `dep-${d.id}-version`},
    ...ready.sort((a, b) => b - a).map((n) => el("option", {value: String(n), textContent: `v${n}`, selected: n === d.version})));
  select.addEventListener("change", () => act(select, say, async () => {
    const n = Number(select.value);
    await change(d, {version: n});
    $(select.id)?.focus(); // the card was drawn again: back to the new select
    return `${modelName(d.model_id)} now answers with version ${n}; calls in flight finished on the previous one.`;
  }));
  return el("div", {className: "dep-field"}, el("label", {htmlFor: select.id, textContent: "Version served"}), select);
}

function publicSwitch(d) {
  const box = el("input", {type: "checkbox", id: `dep-${d.id}-public`, checked: d.public, role: "switch"});
  box.addEventListener("change", () => act(box, say, async () => {
    await change(d, {public: box.checked});
    $(`dep-${d.id}-public`)?.focus();
    return box.checked ? "Public: anyone with the share link can try the model in their browser."
      : "Private again: the share link no longer opens the model.";
  }));
  return el("label", {className: "dep-switch", htmlFor: box.id}, box, "Public share page");
}

function shareBlock(d) {
  const code = embedCode(d);
  const b = button("Copy", "Copy the embed code", () => copy(code, b, "Embed code"));
  return el("div", {className: "dep-share"},
    copyRow(`dep-${d.id}-share`, "Share link", shareUrl(d)),
    el("p", {className: "dep-link"}, el("a", {href: shareUrl(d), target: "_blank", rel: "noopener",
      textContent: "Open the share page"})),
    codeBlock(`dep-${d.id}-embed`, "Embed on your site", code, b));
}

// A block of code under its name, with its Copy button beside the name (the code keeps the full width).
function codeBlock(id, label, text, copyButton) {
  copyButton.classList.add("small");
  return el("div", {className: "dep-field"},
    el("div", {className: "dep-code-head"}, el("span", {className: "dep-label", id: `${id}-label`, textContent: label}),
      copyButton),
    // focusable, so a keyboard can scroll a long line; named by the label above it
    el("pre", {tabIndex: 0, role: "group", "aria-labelledby": `${id}-label`}, el("code", {id, textContent: text})));
}

function describeForm(d) {
  const id = `dep-${d.id}-description`;
  const input = el("textarea", {id, value: d.description, maxLength: 500, rows: 2,
    placeholder: "What it predicts, for the share page"});
  const save = el("button", {type: "submit", textContent: "Save description"});
  const form = el("form", {className: "dep-describe"}, el("label", {htmlFor: id, textContent: "Description"}), input, save);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(save, say, async () => {
      await change(d, {description: input.value.trim()});
      return "Description saved.";
    });
  });
  return form;
}

function snippetBlock(d) {
  const box = el("div", {className: "dep-snippets"}, el("p", {className: "hint", textContent: "Preparing the code…"}));
  box.dataset.id = d.id;
  const open = codeOpen.get(d.id) ?? deployments[0]?.id === d.id; // the newest one's code shows at first
  const details = el("details", {className: "dep-code", open},
    el("summary", {textContent: "Call it from your code (curl, Python, JavaScript)"}), box);
  details.addEventListener("toggle", () => codeOpen.set(d.id, details.open));
  fillSnippets(box, d);
  return details;
}

async function fillSnippets(box, d) {
  try {
    const {instance, from} = await instanceFor(d);
    box.replaceChildren(
      el("p", {className: "hint", textContent: `${FILLED[from]
        ?? "Open the model's dataset in the workbench to fill these with one of its rows."} ` +
        "Set MLLAB_API_KEY to one of your keys first."}),
      ...snippets(d.predict_url, instance).map((s) => {
        const b = button("Copy", `Copy the ${s.label} snippet`, () => copy(s.text, b, `The ${s.label} snippet`));
        return codeBlock(`dep-${d.id}-${s.id}`, s.label, s.text, b);
      }));
    box.dataset.instance = JSON.stringify(instance);
  } catch (err) {
    box.replaceChildren(el("p", {className: "problem", textContent: `The snippets could not be made: ${err.message}`}));
  }
}

// Another dataset in the workbench: the snippets take its first row when it has the models' features.
state.on("dataset", () => {
  for (const box of ui.list?.querySelectorAll(".dep-snippets") || []) {
    const d = deployments.find((x) => x.id === box.dataset.id);
    if (d) fillSnippets(box, d);
  }
});

// --- changes -------------------------------------------------------------------------------------

async function change(d, body) {
  edits++;
  const updated = await session.request("PATCH", `/deployments/${d.id}`, body);
  edits++; // and once it is done: a list read meanwhile is read again
  deployments = deployments.map((x) => (x.id === updated.id ? updated : x));
  render();
  return updated;
}

async function remove(d) {
  if (!confirm(`Delete the deployment of ${modelName(d.model_id)} v${d.version}? Its predict URL and share page ` +
    "stop answering at once; the model stays in your library.")) return "";
  edits++;
  await session.request("DELETE", `/deployments/${d.id}`);
  edits++; // and once it is done: a list read meanwhile is read again
  deployments = deployments.filter((x) => x.id !== d.id);
  render();
  $("deployments-title").focus();
  return `Deleted the deployment of ${modelName(d.model_id)}.`;
}

/** Deploys version `version` of `model` (a record of GET /models) and shows it at the top of the panel. */
export async function deploy(model, version) {
  models.set(model.id, model);
  edits++;
  const made = await session.request("POST", "/deployments", {model_id: model.id, version});
  edits++; // and once it is done: a list read meanwhile is read again
  deployments = [made, ...deployments.filter((x) => x.id !== made.id)];
  render();
  root.scrollIntoView({block: "start"});
  $(`dep-${made.id}-title`)?.focus();
  say(`Deployed ${model.name} v${version}: it answers at its predict URL below. Create an API key to call it.`);
  return made;
}

// --- API keys ------------------------------------------------------------------------------------

const KEY_HEADS = ["Name", "Prefix", "Scopes", "Works for", "Created", "Last used", "Expires", "Actions"];

function keyForm() {
  const name = el("input", {id: "key-name", required: true, maxLength: 100, autocomplete: "off", placeholder: "my script"});
  const only = el("select", {id: "key-deployment"});
  const expiry = el("select", {id: "key-expiry"}, el("option", {value: "", textContent: "Never"}),
    ...EXPIRY_DAYS.map((n) => el("option", {value: String(n), textContent: `In ${n} days`})));
  const submit = el("button", {type: "submit", className: "primary", textContent: "Create key"});
  const form = el("form", {id: "key-form", className: "dep-key-form", "aria-label": "Create an API key"},
    el("div", {className: "dep-field"}, el("label", {htmlFor: name.id, textContent: "Name"}), name),
    el("div", {className: "dep-field"}, el("label", {htmlFor: only.id, textContent: "Works for"}), only),
    el("div", {className: "dep-field"}, el("label", {htmlFor: expiry.id, textContent: "Expires"}), expiry),
    submit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(submit, sayKeys, async () => {
      const body = {name: name.value.trim(), scopes: ["predict"]};
      if (only.value) body.deployment_ids = [only.value];
      if (expiry.value) body.expires_in_days = Number(expiry.value);
      edits++;
      const made = await session.request("POST", "/api-keys", body);
      edits++; // and once it is done: a list read meanwhile is read again
      const {key, ...listed} = made;
      keys = [listed, ...keys];
      name.value = "";
      renderKeys();
      showNewKey(made.name, key);
      return "";
    });
  });
  return form;
}

function renderKeyForm() {
  const only = $("key-deployment");
  const chosen = only.value;
  only.replaceChildren(el("option", {value: "", textContent: "All my deployments"}),
    ...deployments.map((d) => el("option", {value: d.id, textContent: `Only ${modelName(d.model_id)} v${d.version}`,
      selected: d.id === chosen})));
}

// The key itself, this once: the API keeps only its hash.
function showNewKey(name, key) {
  const done = button("I have copied it", "Hide the new key", () => {
    ui.newKey.hidden = true;
    ui.newKey.replaceChildren();
    $("key-name").focus();
  });
  ui.newKey.replaceChildren(
    el("h4", {id: "new-key-title", tabIndex: -1, textContent: `Your new key “${name}”`}),
    el("p", {className: "dep-warning", textContent: "Copy it now: you will not see it again. We keep only a " +
      "fingerprint of it; if you lose it, revoke it and create another."}),
    copyRow("new-key-value", "API key", key, sayKeys),
    el("p", {className: "hint"}, "In a terminal: ", el("code", {textContent: "export MLLAB_API_KEY='…'"}),
      " then run a snippet."),
    done);
  ui.newKey.hidden = false;
  $("new-key-title").focus();
}

function renderKeys() {
  ui.noKeys.hidden = keys.length > 0 || !pro();
  ui.keysBox.hidden = keys.length === 0;
  const worksFor = (k) => (k.deployment_ids?.length
    ? k.deployment_ids.map((id) => {
      const d = deployments.find((x) => x.id === id);
      return d ? `${modelName(d.model_id)} v${d.version}` : "a deleted deployment";
    }).join(", ")
    : "all my deployments");
  ui.keys.replaceChildren(...keys.map((k) => {
    const cells = [
      el("th", {scope: "row", className: "lib-name", textContent: k.name}),
      el("td", {}, el("code", {textContent: `${k.prefix}…`})),
      el("td", {textContent: k.scopes.join(", ")}),
      el("td", {textContent: worksFor(k)}),
      el("td", {}, time(k.created_at, "—")),
      el("td", {}, time(k.last_used_at)),
      el("td", {}, time(k.expires_at)),
      el("td", {className: "lib-actions"}, button("Revoke", `Revoke the key ${k.name}`,
        (b) => act(b, pro() ? sayKeys : say, () => revoke(k)), {className: "danger"})),
    ];
    cells.forEach((c, i) => { if (c.tagName === "TD") c.dataset.label = KEY_HEADS[i]; });
    const tr = el("tr", {tabIndex: -1}, ...cells);
    tr.dataset.id = k.id;
    tr.dataset.prefix = k.prefix;
    return tr;
  }));
}

async function revoke(k) {
  if (!confirm(`Revoke the key “${k.name}”? Calls with it are refused from now on.`)) return "";
  edits++;
  await session.request("DELETE", `/api-keys/${k.id}`);
  edits++; // and once it is done: a list read meanwhile is read again
  keys = keys.filter((x) => x.id !== k.id);
  render(); // a free account's last key gone, the keys section goes too: focus and message stay above it
  (pro() ? $("keys-title") : $("deployments-title")).focus();
  return `Revoked ${k.name}: calls with it now answer 401.`;
}

// --- who is signed in ----------------------------------------------------------------------------

function reset() {
  deployments = [];
  keys = [];
  models.clear();
  instances.clear();
  savedRows.clear();
  codeOpen.clear();
  ui.newKey.hidden = true;
  ui.newKey.replaceChildren();
  say("");
  sayKeys("");
  render();
}

// The panel's own stylesheet (kept out of the first load's lab.css); the panel shows once it has loaded,
// or failed to (then it is plain but usable).
const styled = new Promise((done) => {
  const sheet = el("link", {rel: "stylesheet", href: "/deploy.css"});
  sheet.addEventListener("load", done);
  sheet.addEventListener("error", done);
  document.head.append(sheet);
});

if (root && !root.childElementCount) {
  mount();
  session.onChange((me) => {
    styled.then(() => { root.hidden = !session.me; });
    if (!me) root.hidden = true;
    if ((me?.uid ?? null) === uid) { // the same person: a plan change shows or hides the PRO prompt
      if (me) render();
      return;
    }
    generation++;
    uid = me?.uid ?? null;
    reset();
    if (me) act(null, say, () => refresh());
  });
}
