// Save to the cloud and load back (docs/architecture.md, the event path): the API allocates a version and signs one PUT
// per file; the browser sends the bytes straight to the bucket, weights.bin first and model.json last
// (model.json is the commit marker), then the dataset (when it came from a CSV) and the run's
// metrics.json. The event pipeline marks the version `ready`; reloading goes through signed GETs.
// What is saved is listed by js/library.js ("Your library"), imported here once someone signs in.
import {$, el, showMessage} from "./dom.js";
import {Problem, session} from "./session.js";
import {state} from "./state.js";

// Between this panel and the library: "saved" {projectId, modelId, version} after a save is recorded;
// "changed" {kind: "project"|"model", id, action: "rename"|"delete"} after the library changed a record.
export const cloud = new EventTarget();
const PLAN_MESSAGE = "Saving to the cloud needs PRO or a promo trial. You can keep training and export models in " +
  "the browser; subscribe or apply a promo code under Billing to save here.";

const READY_TIMEOUT_MS = 60_000;
const saved = {projectId: null, modelId: null, name: null}; // this page's model in the cloud: new saves add versions

const say = (text, problem = false) => showMessage($("cloud-message"), text, problem, "status");

function step(text) {
  $("cloud-steps").append(el("li", {textContent: text}));
}

// One signed PUT (create-only: a URL makes at most one object); an expired or refused URL is signed again once.
async function put(sign, blob) {
  for (let attempt = 1; ; attempt++) {
    const signed = await session.request("POST", "/signed/upload", {...sign, size: blob.size});
    const res = await fetch(signed.url, {method: "PUT", headers: signed.headers, body: blob});
    // 412: the URL is create-only and the object exists, i.e. an earlier attempt landed after all.
    if (res.ok || res.status === 412) {
      // Report the upload: an S3-compatible store sends no event of its own (on GCS the bucket does, and this is a no-op).
      await session.request("POST", "/signed/complete", {object: signed.object});
      return signed.object;
    }
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
  // The plan as it is now (it may have changed since the page loaded): a free user is told before
  // anything is created, rather than left with an empty project and a version that stays pending.
  const me = await session.request("GET", "/me");
  if (me.subscription?.plan !== "pro") throw new Problem(PLAN_MESSAGE);
  const projectId = await ensureProject();
  // The same project and model name as the last save or load: a new version of that model; else a new model.
  const name = $("cloud-model-name").value.trim() || trained.dataset?.name || "model";
  if (saved.projectId !== projectId || !saved.modelId || saved.name !== name) {
    const model = await session.request("POST", "/models", {project_id: projectId, name, config_json: trained.spec || {}});
    Object.assign(saved, {projectId, modelId: model.id, name});
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
  let jobId = null;
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
    // The class labels travel with the run, so the library can label its confusion matrix.
    const labels = trained.preprocessor?.target_encoding?.labels;
    const params = {...trained.metrics.params, target: trained.preprocessor?.target ?? null, ...(labels ? {labels} : {})};
    const metrics = {...trained.metrics, params, model_id: saved.modelId, version, dataset_id: datasetId};
    await put({kind: "metrics", job_id: job.id}, new Blob([JSON.stringify(metrics)], {type: "application/json"}));
    jobId = job.id;
    step("training run uploaded");
  }
  say(`Uploaded; waiting for version ${version} to be recorded…`);
  // Each file is recorded by the event pipeline on its own: saved means the version is ready, the
  // dataset ready and the run's metrics recorded, so the library lists all of them complete.
  const modelId = saved.modelId;
  // A refused file marks its record `failed` with the reason: say it instead of waiting on.
  const settled = (record, done) => {
    if (record?.status === "failed") throw new Problem(record.failure || "An uploaded file was refused.");
    return record?.status === done;
  };
  let waiting = [async () => settled((await session.request("GET", `/models/${modelId}`)).versions
    .find((v) => v.version === version), "ready")];
  if (datasetId) waiting.push(async () => settled(await session.request("GET", `/datasets/${datasetId}`), "ready"));
  if (jobId) waiting.push(async () => settled(await session.request("GET", `/jobs/${jobId}`), "recorded"));
  const started = Date.now();
  while (Date.now() - started < READY_TIMEOUT_MS) {
    const done = await Promise.all(waiting.map((check) => check()));
    waiting = waiting.filter((_, i) => !done[i]);
    if (!waiting.length) {
      say(`Saved as version ${version}.`);
      cloud.dispatchEvent(new CustomEvent("saved", {detail: {projectId, modelId, version}}));
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  cloud.dispatchEvent(new CustomEvent("saved", {detail: {projectId, modelId, version}}));
  throw new Problem(`Version ${version} was uploaded but is not all recorded yet; refresh the library in a moment.`);
}

/** Load a ready version into the workbench through signed GETs; later saves add versions to it. */
export async function loadVersion(model, version) {
  const base = `users/${session.me.uid}/projects/${model.project_id}/models/${model.id}/versions/${version}`;
  const url = async (file) => (await session.request("GET", `/signed/download?object=${encodeURIComponent(`${base}/${file}`)}`)).url;
  const [jsonUrl, binUrl] = await Promise.all([url("model.json"), url("weights.bin")]);
  const {loadFromUrls} = await import("./model.js");
  const loaded = await loadFromUrls(jsonUrl, binUrl);
  const meta = loaded.getUserDefinedMetadata?.() || {};
  Object.assign(saved, {projectId: model.project_id, modelId: model.id, name: model.name});
  state.set("model", {model: loaded, spec: meta.spec || model.config_json, preprocessor: meta.preprocessor || null,
    metrics: null, dataset: null, source: `cloud: ${model.name} v${version}`});
  $("cloud-project").value = model.project_id;
  $("cloud-new-project").hidden = $("cloud-project").value !== "";
  $("cloud-model-name").value = model.name;
}

/** The project choice, fresh from the API (after a save, or a rename or delete in the library). */
export async function listProjects(selected = $("cloud-project").value) {
  const {items} = await session.request("GET", "/projects?limit=100");
  const select = $("cloud-project");
  select.replaceChildren(el("option", {value: "", textContent: "New project…"}),
    ...items.map((p) => el("option", {value: p.id, textContent: p.name, selected: p.id === selected})));
  $("cloud-new-project").hidden = select.value !== "";
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
      el("p", {className: "hint"}, "Saved models, datasets and training runs are listed in ",
        el("a", {href: "#library", textContent: "Your library"}), ".")),
    el("p", {id: "cloud-message", role: "status"}));
  let listedFor = null; // the uid whose projects the choice lists: a new /me of the same person (a plan change) keeps it
  session.onChange((me) => {
    $("cloud-signed-in").hidden = !me;
    $("cloud-signed-out").hidden = Boolean(me);
    if ((me?.uid ?? null) === listedFor) return;
    listedFor = me?.uid ?? null;
    if (!me) {
      Object.assign(saved, {projectId: null, modelId: null, name: null});
      return;
    }
    run(() => listProjects(saved.projectId || ""));
    import("./library.js"); // the lists: loaded only for a signed-in person
  });
  cloud.addEventListener("changed", ({detail}) => {
    if (detail.action === "delete" && (detail.id === saved.projectId || detail.id === saved.modelId)) {
      Object.assign(saved, {projectId: null, modelId: null, name: null}); // the next save makes a new model
    }
    if (detail.kind === "project") {
      listProjects(saved.projectId || "").catch((err) => say(`The project list did not refresh: ${err.message}`, true));
    }
  });
  state.on("model", (m) => { $("cloud-save").disabled = !m?.model; });
}

const mount = $("cloud-panel");
if (mount && !mount.childElementCount) mountCloudPanel(mount);
