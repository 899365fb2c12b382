// The training worker (a module worker, started by js/trainer.js): TF.js lives here and nowhere else,
// so a long run never blocks the page. It picks the backend (a requested one, the ladder for large
// models, or for small ones the fastest by a measured probe), estimates a run's time from a short
// probe, trains, and keeps the trained or loaded models the page holds handles on (predict, export).
//
// Messages in: {id, op, args}; out: {id, event} while an op runs, then {id, result, loaded} or {id, error}.
import {decodeOutput, transformFeatures, unpackRows} from "./data.js";
import {estimateMs, fitRun, stepTime} from "./fit.js";
import {paramCount, probeKey} from "./model.js";
import {disposeTfModel, loadTfFromArtifacts, loadTfFromUrls, saveTfArtifacts} from "./model-tf.js";
import {BACKENDS, LABEL, ensureTf, getTf, isLoaded, pickBackend, useBackend} from "./tfjs.js";

const SMALL_MODEL = 20_000; // parameters: up to this many, the backend is the fastest one measured
const models = new Map(); // handle id -> tf.LayersModel
let nextId = 1;
let stopRequested = false;

class Cancelled extends Error {
  constructor() { super("Stopped before the first epoch."); this.name = "Cancelled"; }
}

// Each backend that starts, timed on one training batch of this model; the fastest is kept.
async function probeAll(spec, batchSize) {
  const probe = [];
  for (const name of BACKENDS) {
    const why = await useBackend(name);
    if (why) { probe.push({name, ms: null, why}); continue; }
    try {
      probe.push({name, ms: Number((await stepTime(spec, batchSize)).toFixed(2))});
    } catch (err) {
      probe.push({name, ms: null, why: err.message});
    }
  }
  const fastest = probe.filter((p) => p.ms !== null).sort((a, b) => a.ms - b.ms)[0];
  if (!fastest) throw new Error(`No TF.js backend could start: ${probe.map((p) => `${LABEL[p.name]}: ${p.why}`).join("; ")}`);
  const why = await useBackend(fastest.name);
  if (why) throw new Error(`${LABEL[fastest.name]} stopped working: ${why}`);
  return probe;
}

/**
 * The backend for a run: {name, requested, reason, skipped, probe?, choice}. choice: a backend name
 * (the ladder from there down) or "auto"; `probes`: {key: {name, probe}} the page kept from earlier
 * probes (js/model.js probeKey). A fresh probe comes back with its `key` for the page to keep.
 */
async function choose({choice = "auto", spec, batchSize, probes}) {
  await ensureTf();
  const key = probeKey(spec, batchSize);
  const cached = probes?.[key];
  if (choice !== "auto") return {...await pickBackend(choice), choice};
  if (paramCount(spec) > SMALL_MODEL) return {...await pickBackend(null), choice};
  if (cached?.name && !(await useBackend(cached.name))) {
    return {name: cached.name, requested: null, reason: null, skipped: [], probe: cached.probe, cached: true, choice};
  }
  const probe = await probeAll(spec, batchSize);
  const name = getTf().getBackend();
  const skipped = probe.filter((p) => p.ms === null).map(({name: n, why}) => ({name: n, why}));
  return {name, requested: null, reason: null, skipped, probe, choice, key};
}

// The time of one batch on the chosen backend: the probe's when it measured one, else a short probe now.
async function batchMs(backend, spec, batchSize) {
  const measured = backend.probe?.find((p) => p.name === backend.name)?.ms;
  return measured ?? stepTime(spec, batchSize);
}

const ops = {
  async estimate({choice, probes, spec, batchSize, epochs, trainRows, valRows}) {
    const backend = await choose({choice, spec, batchSize, probes});
    const stepMs = await batchMs(backend, spec, batchSize);
    return {backend, stepMs, ms: estimateMs({epochs, trainRows, valRows, batchSize, stepMs})};
  },

  async train({packed, dataset, draft, choice, probes}, report, transfer) {
    stopRequested = false;
    const rows = unpackRows(packed);
    await ensureTf();
    if (stopRequested) throw new Cancelled();
    let started = null;
    const result = await fitRun({...dataset, rows}, draft, {
      shouldStop: () => stopRequested,
      report: (event) => report(event),
      // The backend is chosen once the model's size is known (after preprocessing), before fit starts.
      beforeFit: async ({spec, trainRows, valRows}) => {
        const batchSize = Math.min(draft.batch_size, trainRows);
        started = await choose({choice, spec, batchSize, probes});
        const stepMs = await batchMs(started, spec, batchSize);
        report({type: "estimate", spec, backend: started, stepMs,
          ms: estimateMs({epochs: draft.epochs, trainRows, valRows, batchSize, stepMs})});
        if (stopRequested) throw new Cancelled();
        return started.name;
      },
    });
    const id = nextId++;
    models.set(id, result.model);
    transfer.push(...Object.values(result.exposed).map((a) => a.buffer));
    return {...result, model: {id, metadata: {preprocessor: result.preprocessor, spec: result.spec}}, backend: started};
  },

  async stop() { stopRequested = true; },

  async predict({id, preprocessor, row}) {
    const tf = getTf();
    const vector = transformFeatures(preprocessor, row);
    const output = tf.tidy(() => Array.from(model(id).predict(tf.tensor2d([vector], [1, vector.length])).dataSync()));
    return {output, ...decodeOutput(preprocessor, output)};
  },

  // Rows of raw values (a chunk of a CSV for js/batch.js) -> {outputs: Float32Array, rows x outputs}.
  async predictRows({id, preprocessor, rows}, report, transfer) {
    const tf = getTf();
    const x = rows.map((row) => transformFeatures(preprocessor, row));
    const outputs = tf.tidy(() => model(id).predict(tf.tensor2d(x, [x.length, preprocessor.inputs])).dataSync());
    transfer.push(outputs.buffer);
    return {outputs};
  },

  async export({id, metadata}, report, transfer) {
    const files = await saveTfArtifacts(model(id), metadata);
    transfer.push(files.bin);
    return files;
  },

  async load({kind, json, bin, jsonUrl, binUrl, choice}) {
    await ensureTf();
    const backend = await pickBackend(choice && choice !== "auto" ? choice : null);
    const loaded = kind === "urls" ? await loadTfFromUrls(jsonUrl, binUrl) : await loadTfFromArtifacts(json, bin);
    const id = nextId++;
    models.set(id, loaded);
    return {id, metadata: loaded.getUserDefinedMetadata() || {}, backend};
  },

  async dispose({id}) {
    disposeTfModel(models.get(id));
    models.delete(id);
  },

  async memory() { return isLoaded() ? getTf().memory() : null; },
};

function model(id) {
  const found = models.get(id);
  if (!found) throw new Error("This model is no longer loaded; train or load it again.");
  return found;
}

self.addEventListener("message", async ({data: {id, op, args}}) => {
  const transfer = [];
  try {
    if (!ops[op]) throw new Error(`Unknown operation ${op}.`);
    const result = await ops[op](args || {}, (event) => self.postMessage({id, event}), transfer);
    self.postMessage({id, result, loaded: isLoaded()}, transfer);
  } catch (err) {
    self.postMessage({id, error: {name: err?.name || "Error", message: err?.message || String(err)}, loaded: isLoaded()});
  }
});
