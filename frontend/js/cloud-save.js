// Saving to the cloud and loading back (docs/architecture.md, the event path), loaded by js/cloud.js on the
// first save or load, so the first page load does not carry it. The API allocates a version and signs one
// PUT per file; the browser sends the bytes straight to the bucket, weights.bin first and model.json last
// (model.json is the commit marker), then the dataset (when it came from a CSV and is not saved in the
// project yet) and the run's metrics.json. The event pipeline marks the version `ready`; loading goes
// through signed GETs.
import {$, el} from "./dom.js";
import {Problem, session} from "./session.js";
import {state} from "./state.js";
import {cloud, listProjects, saved, say} from "./cloud.js";

const PLAN_MESSAGE = "Saving to the cloud needs PRO or a promo trial. You can keep training and export models in " +
  "the browser; subscribe or apply a promo code under Billing to save here.";

const READY_TIMEOUT_MS = 60_000;

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

// The hex SHA-256 of a dataset's text: the same content has the same hash, whatever its file name.
export async function sha256(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// A ready dataset of the project with this content hash (kept in its schema_json), or null.
async function findDataset(projectId, hash) {
  let cursor = null;
  do {
    const query = new URLSearchParams({project_id: projectId, limit: "100", ...(cursor ? {cursor} : {})});
    const page = await session.request("GET", `/datasets?${query}`);
    const same = page.items.find((d) => d.status === "ready" && d.schema_json?.sha256 === hash);
    if (same) return same;
    cursor = page.next_cursor;
  } while (cursor);
  return null;
}

async function ensureProject() {
  const choice = $("cloud-project").value;
  if (choice) return choice;
  const name = $("cloud-new-project").value.trim() || "My project";
  const project = await session.request("POST", "/projects", {name});
  await listProjects(project.id);
  return project.id;
}

export async function save() {
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
  let datasetNew = false;
  if (trained.dataset?.source === "csv" && trained.dataset.text) {
    // One upload per content and project: the same CSV saved again reuses its dataset record.
    const hash = await sha256(trained.dataset.text);
    const same = await findDataset(projectId, hash);
    if (same) {
      datasetId = same.id;
      step(`dataset already saved (${same.name}): not uploaded again`);
    } else {
      const ds = await session.request("POST", "/datasets", {project_id: projectId, name: trained.dataset.name,
        schema_json: {columns: trained.dataset.columns, target: trained.dataset.target, task: trained.dataset.task,
          sha256: hash}});
      const filename = (trained.dataset.name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/\.csv$/i, "") || "data") + ".csv";
      await put({kind: "dataset", dataset_id: ds.id, filename}, new Blob([trained.dataset.text], {type: "text/csv"}));
      datasetId = ds.id;
      datasetNew = true;
      step("dataset uploaded");
    }
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
  if (datasetNew) waiting.push(async () => settled(await session.request("GET", `/datasets/${datasetId}`), "ready"));
  if (jobId) waiting.push(async () => settled(await session.request("GET", `/jobs/${jobId}`), "recorded"));
  const started = Date.now();
  while (Date.now() - started < READY_TIMEOUT_MS) {
    const done = await Promise.all(waiting.map((check) => check()));
    waiting = waiting.filter((_, i) => !done[i]);
    if (!waiting.length) {
      const notes = $("cloud-notes").value.trim();
      if (notes) {
        await session.request("PATCH", `/models/${modelId}/versions/${version}`, {notes});
        $("cloud-notes").value = "";
      }
      say(`Saved as version ${version}${notes ? " with your notes" : ""}.`);
      cloud.dispatchEvent(new CustomEvent("saved", {detail: {projectId, modelId, version}}));
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  cloud.dispatchEvent(new CustomEvent("saved", {detail: {projectId, modelId, version}}));
  throw new Problem(`Version ${version} was uploaded but is not all recorded yet; refresh the library in a moment.`);
}

/** Load a ready version into the workbench through signed GETs, with its training run and dataset when
 * they were saved; later saves add versions to it. -> what came with it: {run, dataset} (booleans). */
export async function loadVersion(model, version) {
  const base = `users/${session.me.uid}/projects/${model.project_id}/models/${model.id}/versions/${version}`;
  const [jsonUrl, binUrl] = await Promise.all([signedGet(`${base}/model.json`), signedGet(`${base}/weights.bin`)]);
  const {loadFromUrls} = await import("./model.js");
  const [loaded, run] = await Promise.all([loadFromUrls(jsonUrl, binUrl), runOf(model, version)]);
  const meta = loaded.getUserDefinedMetadata?.() || {};
  Object.assign(saved, {projectId: model.project_id, modelId: model.id, name: model.name});
  const dataset = run.dataset ? await openDatasetRecord(run.dataset) : null;
  state.set("model", {model: loaded, spec: meta.spec || model.config_json, preprocessor: meta.preprocessor || null,
    metrics: run.metrics, dataset, source: `cloud: ${model.name} v${version}`, cloud: {modelId: model.id, version}});
  $("cloud-project").value = model.project_id;
  $("cloud-new-project").hidden = $("cloud-project").value !== "";
  $("cloud-model-name").value = model.name;
  return {run: Boolean(run.metrics), dataset: Boolean(dataset)};
}

const signedGet = async (object) =>
  (await session.request("GET", `/signed/download?object=${encodeURIComponent(object)}`)).url;

// The training run saved with a version (its metrics.json) and the dataset it trained on, when there are.
async function runOf(model, version) {
  const {items} = await session.request("GET", `/jobs?model_id=${model.id}&limit=100`);
  const job = items.find((j) => j.version === version && j.status === "recorded");
  if (!job) return {metrics: null, dataset: null};
  const [res, dataset] = await Promise.all([
    fetch(await signedGet(`users/${session.me.uid}/projects/${job.project_id}/jobs/${job.id}/metrics.json`)),
    job.dataset_id ? session.request("GET", `/datasets/${job.dataset_id}`).catch(() => null) : null]);
  const metrics = res.ok ? await res.json() : null;
  return {metrics, dataset: dataset?.status === "ready" && dataset.object ? dataset : null};
}

/** A saved dataset record opened in the workbench: its CSV through a signed GET, with the roles, types,
 * target and task it was saved with (columns the schema does not name are inferred). -> the dataset. */
export async function openDatasetRecord(d) {
  const res = await fetch(await signedGet(d.object));
  if (!res.ok) throw new Problem(`${d.name} could not be downloaded (HTTP ${res.status}); try again.`);
  const text = await res.text();
  const csv = await import("./data.js");
  const parsed = await csv.parseCsv(text, {delimiter: ","});
  const schema = d.schema_json || {};
  const kept = new Map((Array.isArray(schema.columns) ? schema.columns : []).map((c) => [c?.name, c]));
  const columns = csv.inferColumns(parsed.fields, parsed.rows).map((c) => {
    const s = kept.get(c.name);
    if (!s) return kept.size ? {...c, role: c.role === "target" ? "feature" : c.role} : c;
    return {name: c.name, role: ["feature", "target", "ignore"].includes(s.role) ? s.role : c.role,
      type: ["numeric", "categorical"].includes(s.type) ? s.type : c.type};
  });
  const target = columns.find((c) => c.role === "target")?.name ?? null;
  const task = csv.TASKS.includes(schema.task) && target === schema.target ? schema.task
    : target ? csv.inferTask(parsed.rows, target, columns.find((c) => c.name === target).type) : "binary";
  const dataset = {name: d.name, source: "csv", columns, rows: parsed.rows, target, task,
    delimiter: parsed.delimiter, text: parsed.text};
  state.set("dataset", dataset);
  return dataset;
}

