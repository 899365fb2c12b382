// The workbench survives a reload: the dataset (rows, column roles, target, task) and the model in use
// (its TF.js files, spec, preprocessing and last run's metrics) are kept in this browser's IndexedDB
// and put back when the page opens. The builder's settings keep their own draft (js/workbench.js).
// Nothing here loads TF.js at import time: a stored model is restored after the first paint.
import {state} from "./state.js";

const DB = "mllab-workbench";
const STORE = "workbench";
// A dataset bigger than this is not kept (the browser's quota is shared with the rest of the origin).
const MAX_KEPT_CHARS = 32 * 1024 * 1024;

let opening = null;
function open() {
  opening ||= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => { opening = null; reject(req.error); };
  });
  return opening;
}

async function run(mode, work) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}
const get = (key) => run("readonly", (s) => s.get(key));
const put = (key, value) => run("readwrite", (s) => s.put(value, key));
const drop = (key) => run("readwrite", (s) => s.delete(key));

// A dataset as stored: plain data only (a File from the picker is not kept; its text and rows are).
function datasetRecord(d) {
  const rest = {...d};
  delete rest.file;
  const size = (rest.text?.length ?? 0) + (rest.rows?.length ?? 0) * (rest.columns?.length ?? 1) * 8;
  return size > MAX_KEPT_CHARS ? null : rest;
}

let restoring = false;
let writes = Promise.resolve();
const queue = (work) => { writes = writes.then(work).catch((err) => report(`Not saved in this browser: ${err.message}`)); return writes; };
let report = () => {};
let savedAt = null;

/** What the workbench keeps, written whenever the dataset or the model changes. */
export function watch({onSaved = () => {}, onProblem = () => {}} = {}) {
  report = onProblem;
  state.on("dataset", (d) => {
    if (restoring) return;
    queue(async () => {
      const record = d ? datasetRecord(d) : null;
      if (d && !record) return onProblem(`${d.name} is too large to keep in this browser; it is not restored after a reload.`);
      await (record ? put("dataset", record) : drop("dataset"));
      savedAt = new Date();
      onSaved(savedAt);
    });
  });
  state.on("model", (m) => {
    if (restoring) return;
    queue(async () => {
      if (!m?.model) { await drop("model"); return; }
      const {exportArtifacts} = await import("./model.js");
      const {json, bin} = await exportArtifacts(m.model, {preprocessor: m.preprocessor, spec: m.spec});
      if (state.model !== m) return; // replaced meanwhile: the newer one is written next
      await put("model", {json, bin, spec: m.spec ?? null, preprocessor: m.preprocessor ?? null, metrics: m.metrics ?? null,
        source: m.source ?? "", dataset: m.dataset?.name ?? null, cloud: m.cloud ?? null});
      savedAt = new Date();
      onSaved(savedAt);
    });
  });
}

/** Waits for every pending write (a test or a page that is about to be left). */
export const flushed = () => writes;

/**
 * Puts the kept dataset and model back: -> {dataset, model} as restored (null where nothing was
 * kept). The model comes back through TF.js (loaded here, only when a model was kept).
 */
export async function restore() {
  let dataset = null, kept = null;
  try {
    [dataset, kept] = await Promise.all([get("dataset"), get("model")]);
  } catch {
    return {dataset: null, model: null}; // IndexedDB refused (a private window, a full disk): start empty
  }
  restoring = true;
  try {
    if (dataset && !state.dataset) state.set("dataset", dataset);
    if (!kept || state.model) return {dataset, model: null};
    // Kept from this page's own export: the files' checks (js/model.js importFiles) have nothing to find.
    const {loadFromArtifacts} = await import("./model.js");
    const model = await loadFromArtifacts(kept.json, kept.bin);
    const restored = {model, spec: kept.spec, preprocessor: kept.preprocessor, metrics: kept.metrics,
      dataset: dataset && kept.dataset === dataset.name ? state.dataset : null, source: kept.source, cloud: kept.cloud,
      restored: true};
    if (!state.model) state.set("model", restored);
    return {dataset, model: restored};
  } finally {
    restoring = false;
  }
}

/** Forgets what is kept (Start over). */
export async function clear() {
  await writes;
  await Promise.all([drop("dataset"), drop("model")]);
}
