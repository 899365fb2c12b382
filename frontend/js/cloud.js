// Save to the cloud and load back (DESIGN section 5): the API allocates a version and signs one PUT
// per file; the browser sends the bytes straight to the bucket, weights.bin first and model.json last
// (model.json is the commit marker), then the dataset (when it came from a CSV) and the run's
// metrics.json. The event pipeline marks the version `ready`; reloading goes through signed GETs.
import {Problem, session} from "./session.js";
import {state} from "./state.js";

const $ = (id) => document.getElementById(id);
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}
const READY_TIMEOUT_MS = 60_000;
const saved = {projectId: null, modelId: null}; // this page's model in the cloud: new saves add versions

function say(text, problem = false) {
  const box = $("cloud-message");
  box.textContent = text;
  box.setAttribute("role", problem ? "alert" : "status");
  box.classList.toggle("problem", problem);
}

function step(text) {
  $("cloud-steps").append(el("li", {textContent: text}));
}

// One signed PUT; an expired or refused URL is signed again once.
async function put(sign, blob) {
  for (let attempt = 1; ; attempt++) {
    const signed = await session.request("POST", "/signed/upload", {...sign, size: blob.size});
    const res = await fetch(signed.url, {method: "PUT", headers: signed.headers, body: blob});
    if (res.ok) return signed.object;
    if (attempt >= 2 || res.status !== 403) throw new Problem(`The upload of ${sign.kind} failed (HTTP ${res.status}).`);
  }
}

async function ensureProject() {
  const choice = $("cloud-project").value;
  if (choice) return choice;
  const name = $("cloud-new-project").value.trim() || "My project";
  const project = await session.request("POST", "/projects", {name});
  await listProjects(project.id);
  return project.id;
}

async function save() {
  const trained = state.model;
  if (!trained?.model) throw new Problem("Train or import a model first.");
  $("cloud-steps").replaceChildren();
  const projectId = await ensureProject();
  if (saved.projectId !== projectId || !saved.modelId) {
    const name = $("cloud-model-name").value.trim() || trained.dataset?.name || "model";
    const model = await session.request("POST", "/models", {project_id: projectId, name, config_json: trained.spec || {}});
    Object.assign(saved, {projectId, modelId: model.id});
  }
  const {exportArtifacts} = await import("./model.js");
  const {json, bin} = await exportArtifacts(trained.model, {preprocessor: trained.preprocessor, spec: trained.spec});
  const {version} = await session.request("POST", `/models/${saved.modelId}/versions`);
  step(`Version ${version} allocated`);
  await put({kind: "weights", model_id: saved.modelId, version}, new Blob([bin], {type: "application/octet-stream"}));
  step("weights.bin uploaded");
  await put({kind: "model", model_id: saved.modelId, version}, new Blob([json], {type: "application/json"}));
  step("model.json uploaded");
  let datasetId = null;
  if (trained.dataset?.source === "csv" && trained.dataset.text) {
    const ds = await session.request("POST", "/datasets", {project_id: projectId, name: trained.dataset.name,
      schema_json: {columns: trained.dataset.columns, target: trained.dataset.target, task: trained.dataset.task}});
    const filename = (trained.dataset.name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/\.csv$/i, "") || "data") + ".csv";
    await put({kind: "dataset", dataset_id: ds.id, filename}, new Blob([trained.dataset.text], {type: "text/csv"}));
    datasetId = ds.id;
    step("dataset uploaded");
  }
  if (trained.metrics) {
    const job = await session.request("POST", "/jobs", {project_id: projectId, model_id: saved.modelId, version,
      dataset_id: datasetId, name: `training run of version ${version}`});
    const metrics = {...trained.metrics, model_id: saved.modelId, version, dataset_id: datasetId};
    await put({kind: "metrics", job_id: job.id}, new Blob([JSON.stringify(metrics)], {type: "application/json"}));
    step("training run uploaded");
  }
  say(`Uploaded; waiting for version ${version} to be recorded…`);
  const started = Date.now();
  while (Date.now() - started < READY_TIMEOUT_MS) {
    const model = await session.request("GET", `/models/${saved.modelId}`);
    if (model.versions.some((v) => v.version === version && v.status === "ready")) {
      say(`Saved as version ${version}.`);
      await listModels();
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Problem(`Version ${version} was uploaded but is not recorded yet; it will appear in the list shortly.`);
}

async function load(model, version) {
  const base = `users/${session.me.uid}/projects/${model.project_id}/models/${model.id}/versions/${version}`;
  const url = async (file) => (await session.request("GET", `/signed/download?object=${encodeURIComponent(`${base}/${file}`)}`)).url;
  const [jsonUrl, binUrl] = [await url("model.json"), await url("weights.bin")];
  const {loadFromUrls} = await import("./model.js");
  const loaded = await loadFromUrls(jsonUrl, binUrl);
  const meta = loaded.getUserDefinedMetadata?.() || {};
  Object.assign(saved, {projectId: model.project_id, modelId: model.id});
  state.set("model", {model: loaded, spec: meta.spec || model.config_json, preprocessor: meta.preprocessor || null,
    metrics: null, dataset: null, source: `cloud: ${model.name} v${version}`});
  say(`Loaded ${model.name} version ${version} from the cloud.`);
}

async function listProjects(selected = "") {
  const {items} = await session.request("GET", "/projects?limit=100");
  const select = $("cloud-project");
  select.replaceChildren(el("option", {value: "", textContent: "New project…"}),
    ...items.map((p) => el("option", {value: p.id, textContent: p.name, selected: p.id === selected})));
  $("cloud-new-project").hidden = select.value !== "";
}

async function listModels() {
  // The list answers models without their versions; each model's versions come from GET /models/{id}.
  const {items: listed} = await session.request("GET", "/models?limit=20");
  const items = await Promise.all(listed.map((m) => session.request("GET", `/models/${m.id}`)));
  $("cloud-models").replaceChildren(...items.map((m) => el("li", {},
    `${m.name} `,
    ...(m.versions || []).map((v) => v.status === "ready"
      ? el("button", {type: "button", textContent: `Load v${v.version}`, onclick: () => run(() => load(m, v.version))})
      : el("span", {textContent: ` v${v.version} (${v.status}) `})))));
}

async function run(work) {
  const controls = $("cloud-panel").querySelectorAll("button, input, select");
  controls.forEach((c) => { c.disabled = true; });
  say("");
  try {
    await work();
  } catch (err) {
    say(err instanceof Problem ? err.message : `That did not work: ${err.message}`, true);
  } finally {
    controls.forEach((c) => { c.disabled = false; });
    $("cloud-save").disabled = !state.model?.model;
  }
}

export function mountCloudPanel(panel) {
  panel.replaceChildren(
    el("h3", {textContent: "Cloud"}),
    el("p", {id: "cloud-signed-out", textContent: "Sign in to save models to the cloud (PRO or a promo trial)."}),
    el("div", {id: "cloud-signed-in", hidden: true},
      el("label", {}, "Project ", el("select", {id: "cloud-project", onchange: () => {
        $("cloud-new-project").hidden = $("cloud-project").value !== ""; }})),
      el("label", {}, " New project name ", el("input", {id: "cloud-new-project", maxLength: 100, placeholder: "My project"})),
      el("label", {}, " Model name ", el("input", {id: "cloud-model-name", maxLength: 100, placeholder: "model"})),
      el("button", {id: "cloud-save", type: "button", textContent: "Save to cloud", disabled: true,
        onclick: () => run(save)}),
      el("ol", {id: "cloud-steps"}),
      el("h4", {textContent: "Your models"}),
      el("ul", {id: "cloud-models"})),
    el("p", {id: "cloud-message", role: "status"}));
  session.onChange((me) => {
    $("cloud-signed-in").hidden = !me;
    $("cloud-signed-out").hidden = Boolean(me);
    if (me) run(async () => { await listProjects(saved.projectId || ""); await listModels(); });
  });
  state.on("model", (m) => { $("cloud-save").disabled = !m?.model; });
}

const mount = $("cloud-panel");
if (mount && !mount.childElementCount) mountCloudPanel(mount);
