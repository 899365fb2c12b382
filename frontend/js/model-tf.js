// The model in the training worker (js/train-worker.js, js/fit.js): the tf.sequential built from a spec
// (js/model.js), and its two files saved and loaded. Apart from js/model.js so that the page's first load
// does not carry it: only the worker imports this.
import {TASKS, basename} from "./model.js";
import {getTf} from "./tfjs.js";

/** A compiled tf.Sequential for a spec, with seeded Glorot-uniform kernels (TF.js must be loaded). */
export function buildModel(spec) {
  const tf = getTf();
  const head = TASKS[spec.task];
  const model = tf.sequential();
  const dense = (units, activation, i) => tf.layers.dense({
    units, activation, ...(i === 0 ? {inputShape: [spec.inputs]} : {}),
    kernelInitializer: tf.initializers.glorotUniform({seed: spec.seed + i}), biasInitializer: "zeros"});
  spec.layers.forEach((layer, i) => model.add(dense(layer.units, layer.activation, i)));
  model.add(dense(spec.outputs, head.activation, spec.layers.length));
  const optimizer = spec.optimizer === "sgd" ? tf.train.sgd(spec.learning_rate) : tf.train.adam(spec.learning_rate);
  model.compile({optimizer, loss: head.loss, metrics: head.metrics});
  return model;
}

/** Frees a model's weights and the optimizer it was compiled with (a passed-in optimizer is not
 * disposed by model.dispose()). Safe to call twice. In the worker. */
export function disposeTfModel(model) {
  if (!model || model.__disposed) return;
  const optimizer = model.optimizer;
  try { model.dispose(); } catch { /* already disposed */ }
  try { optimizer?.dispose(); } catch { /* already disposed */ }
  model.__disposed = true;
}

/**
 * The exact two files TF.js's own save writes: model.json with paths ["weights.bin"] and the
 * metadata (preprocessing, spec) in userDefinedMetadata, and weights.bin. -> {json: string, bin: ArrayBuffer}
 * In the worker.
 */
export async function saveTfArtifacts(model, metadata) {
  const tf = getTf();
  if (metadata !== undefined) model.setUserDefinedMetadata(JSON.parse(JSON.stringify(metadata)));
  let files;
  await model.save(tf.io.withSaveHandler(async (a) => {
    const bin = tf.io.CompositeArrayBuffer.join(a.weightData);
    const json = JSON.stringify({modelTopology: a.modelTopology, format: a.format, generatedBy: a.generatedBy,
      convertedBy: a.convertedBy, userDefinedMetadata: a.userDefinedMetadata,
      weightsManifest: [{paths: ["weights.bin"], weights: a.weightSpecs}]});
    files = {json, bin};
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: "JSON", weightDataBytes: bin.byteLength}};
  }));
  return files;
}

/** A fetch that fails on an HTTP error instead of handing TF.js an error page as weights. */
async function strictFetch(url, init) {
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`HTTP ${res.status} fetching ${String(url).split("?")[0]}`);
  return res;
}

/**
 * A tf.LayersModel from two (signed) URLs: weights.bin is fetched from its own URL, not from
 * model.json's URL with model.json's query string. In the worker.
 */
export function loadTfFromUrls(jsonUrl, binUrl) {
  const tf = getTf();
  return tf.loadLayersModel(jsonUrl, {
    fetchFunc: strictFetch,
    weightUrlConverter: async (path) => {
      if (basename(path) === "weights.bin") return binUrl;
      throw new Error(`model.json lists an unknown weights file: ${path}`);
    },
  });
}

/** A tf.LayersModel from the two files' contents ({json: string, bin: ArrayBuffer}). In the worker. */
export function loadTfFromArtifacts(json, bin) {
  const tf = getTf();
  const manifest = JSON.parse(json);
  return tf.loadLayersModel(tf.io.fromMemory({modelTopology: manifest.modelTopology, weightSpecs: manifest.weightsManifest[0].weights,
    weightData: bin, format: manifest.format, generatedBy: manifest.generatedBy, convertedBy: manifest.convertedBy,
    userDefinedMetadata: manifest.userDefinedMetadata}));
}
