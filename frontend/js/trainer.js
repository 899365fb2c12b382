// The page's side of the training worker (js/train-worker.js): starts it on first use, sends it
// operations and hands back their results and progress events. Trained and loaded models stay in the
// worker; the page holds a ModelHandle. The backend probe's results are kept in localStorage per
// model size, so the probe runs once per size, not once per run.
import {packRows} from "./data.js";
import {savedChoice} from "./tfjs.js";

const PROBES_KEY = "mllab.backend-probe.v1";
let worker = null;
let seq = 0;
let loaded = false; // TF.js is loaded in the worker
const pending = new Map(); // id -> {resolve, reject, onEvent}

/** What train() throws when it was stopped before the first epoch. */
export class Cancelled extends Error {
  constructor(message = "Stopped before the first epoch.") { super(message); this.name = "Cancelled"; }
}

function failAll(message) {
  for (const {reject} of pending.values()) reject(new Error(message));
  pending.clear();
  worker = null;
  loaded = false;
}

function start() {
  if (worker) return worker;
  worker = new Worker(new URL("./train-worker.js", import.meta.url), {type: "module", name: "mllab-training"});
  worker.addEventListener("message", ({data}) => {
    const waiting = pending.get(data.id);
    if (!waiting) return;
    if (data.event) { waiting.onEvent?.(data.event); return; }
    pending.delete(data.id);
    loaded = data.loaded;
    if (data.error) {
      const err = data.error.name === "Cancelled" ? new Cancelled(data.error.message) : new Error(data.error.message);
      waiting.reject(err);
    } else {
      waiting.resolve(data.result);
    }
  });
  worker.addEventListener("error", (event) => {
    event.preventDefault();
    failAll(`The training worker failed${event.message ? `: ${event.message}` : ""}.`);
  });
  return worker;
}

/** Runs one operation in the worker; resolves to its result. */
export function call(op, args = {}, {transfer = [], onEvent} = {}) {
  const id = ++seq;
  return new Promise((resolve, reject) => {
    pending.set(id, {resolve, reject, onEvent});
    start().postMessage({id, op, args}, transfer);
  });
}

/** TF.js has been loaded (in the worker). */
export const isLoaded = () => loaded;

/** tf.memory() in the worker, or null before TF.js loaded. */
export const memory = () => (worker ? call("memory") : Promise.resolve(null));

/** A model that lives in the worker. */
class ModelHandle {
  constructor(id, metadata) { this.id = id; this.metadata = metadata || {}; this.disposed = false; }
  getUserDefinedMetadata() { return this.metadata; }
}

export async function load(kind, args, transfer = []) {
  const {id, metadata, backend} = await call("load", {kind, ...args, choice: currentChoice()}, {transfer});
  const handle = new ModelHandle(id, metadata);
  handle.backend = backend;
  return handle;
}

export function dispose(handle) {
  if (!handle || handle.disposed || !(handle instanceof ModelHandle)) return;
  handle.disposed = true;
  call("dispose", {id: handle.id}).catch(() => { /* the worker is gone: so is the model */ });
}

/** Predict one raw row ({feature: value}) -> {output: number[], label?, probabilities?, value?}. */
export const predict = (handle, preprocessor, row) => call("predict", {id: handle.id, preprocessor, row});

// --- the backend choice and its probe cache ---------------------------------------------------------

let choice = savedChoice();
/** The person's backend choice: "auto" or a backend name. */
const currentChoice = () => choice;
export function setChoice(value) { choice = value || "auto"; }

function probes() {
  try { return JSON.parse(localStorage.getItem(PROBES_KEY) || "{}"); } catch { return {}; }
}
function keepProbe(backend) {
  if (!backend?.probe || !backend.key) return;
  try {
    localStorage.setItem(PROBES_KEY, JSON.stringify({...probes(), [backend.key]: {name: backend.name, probe: backend.probe}}));
  } catch { /* private mode: probe again next time */ }
}

/** The estimated time of a run before it starts: {backend, stepMs, ms}, from a short measured probe. */
export async function estimate({spec, batchSize, epochs, trainRows, valRows}) {
  const result = await call("estimate", {choice, probes: probes(), spec, batchSize, epochs, trainRows, valRows});
  keepProbe(result.backend);
  return result;
}

/**
 * Train `draft` on `dataset` in the worker. onBegin({spec, backend, heldOut, trainRows, valRows}),
 * onEstimate({backend, stepMs, ms}) and onEpoch({epoch, epochs, row, elapsedMs}) report progress;
 * aborting `signal` stops after the current batch (keeping the best weights) or, before the first
 * epoch, rejects with Cancelled. Resolves like js/fit.js's fitRun, with `model` a ModelHandle.
 */
export async function train(dataset, draft, {onBegin = () => {}, onEstimate = () => {}, onEpoch = () => {}, signal} = {}) {
  if (signal?.aborted) throw new Cancelled();
  const names = dataset.columns.map((c) => c.name);
  const {packed, transfer} = await packRows(dataset.rows, names);
  const meta = {name: dataset.name, columns: dataset.columns, target: dataset.target, validation: dataset.validation};
  const stop = () => call("stop").catch(() => {});
  signal?.addEventListener("abort", stop);
  try {
    const result = await call("train", {packed, dataset: meta, draft, choice, probes: probes()}, {transfer, onEvent: (event) => {
      if (event.type === "begin") onBegin(event);
      else if (event.type === "estimate") { keepProbe(event.backend); onEstimate(event); } else onEpoch(event);
    }});
    result.model = new ModelHandle(result.model.id, result.model.metadata);
    return result;
  } finally {
    signal?.removeEventListener("abort", stop);
  }
}
