// The model: a spec the builder edits and its files. Nothing here touches TF.js: paramCount() and
// validate() run before TF.js is loaded. TF.js runs in the training worker only (js/model-tf.js builds,
// saves and loads the tf.sequential there); the page holds a handle (js/trainer.js) and its
// exportArtifacts/importFiles/loadFromUrls/disposeModel ask the worker.
//
// spec = {task: "binary"|"multiclass"|"regression", inputs, outputs, layers: [{units, activation}],
//         optimizer: "adam"|"sgd", learning_rate, seed, features?: [{name, type, values?}], target?}
// The output head and the loss follow the task (sigmoid + binary cross-entropy, softmax + categorical, linear + MSE).
export const TASKS = {
  binary: {activation: "sigmoid", loss: "binaryCrossentropy", metrics: ["accuracy"]},
  multiclass: {activation: "softmax", loss: "categoricalCrossentropy", metrics: ["accuracy"]},
  regression: {activation: "linear", loss: "meanSquaredError", metrics: []},
};
export const ACTIVATIONS = ["relu", "tanh", "sigmoid", "elu", "selu", "swish", "softplus", "linear"];
export const OPTIMIZERS = ["adam", "sgd"];
export const LIMITS = {layers: 8, units: 1024, epochs: 5000, batch_size: 4096, learning_rate: 10, patience: 1000,
  seed: 2 ** 31 - 1};

/** Weights + biases of the dense stack, without TF.js: sum over layers of in*out + out. */
export function paramCount(spec) {
  let total = 0;
  let width = spec.inputs;
  for (const units of [...spec.layers.map((l) => l.units), spec.outputs]) {
    total += width * units + units;
    width = units;
  }
  return total;
}

/** The backend probe's cache key for a model: its size (parameters, to a power of two) and batch size. */
export const probeKey = (spec, batchSize) => `${Math.round(Math.log2(Math.max(1, paramCount(spec))))}:${batchSize}`;

const isInt = (v, lo, hi) => Number.isInteger(v) && v >= lo && v <= hi;

/**
 * Problems with a builder draft (spec fields plus epochs, batch_size, patience), as
 * [{field, message}] where field is "task", "layers.<i>.units", "learning_rate", ...; [] when valid.
 */
export function validate(draft) {
  const problems = [];
  const bad = (field, message) => problems.push({field, message});
  if (!TASKS[draft.task]) bad("task", "Choose a task: binary, multiclass or regression.");
  if (draft.layers.length > LIMITS.layers) bad("layers", `Use at most ${LIMITS.layers} hidden layers.`);
  draft.layers.forEach((layer, i) => {
    if (!isInt(layer.units, 1, LIMITS.units)) {
      bad(`layers.${i}.units`, `Hidden layer ${i + 1}: units must be a whole number from 1 to ${LIMITS.units}.`);
    }
    if (!ACTIVATIONS.includes(layer.activation)) bad(`layers.${i}.activation`, `Hidden layer ${i + 1}: choose an activation.`);
  });
  if (!OPTIMIZERS.includes(draft.optimizer)) bad("optimizer", "Choose an optimizer: adam or sgd.");
  if (!(Number.isFinite(draft.learning_rate) && draft.learning_rate > 0 && draft.learning_rate <= LIMITS.learning_rate)) {
    bad("learning_rate", `The learning rate must be above 0 and at most ${LIMITS.learning_rate}.`);
  }
  if (!isInt(draft.epochs, 1, LIMITS.epochs)) bad("epochs", `Epochs must be a whole number from 1 to ${LIMITS.epochs}.`);
  if (!isInt(draft.batch_size, 1, LIMITS.batch_size)) {
    bad("batch_size", `The batch size must be a whole number from 1 to ${LIMITS.batch_size}.`);
  }
  if (!isInt(draft.seed, 0, LIMITS.seed)) bad("seed", `The seed must be a whole number from 0 to ${LIMITS.seed}.`);
  if (!isInt(draft.patience, 0, LIMITS.patience)) {
    bad("patience", `Patience must be a whole number from 0 (no early stopping) to ${LIMITS.patience}.`);
  }
  return problems;
}

/** The file name of a path or URL path. */
export const basename = (path) => path.split("/").pop();

// --- the page's side: a handle on a model that lives in the worker ---------------------------------

/** Frees a model (a handle from js/trainer.js) in the worker. Safe to call twice. */
export async function disposeModel(handle) {
  if (handle) (await import("./trainer.js")).dispose(handle);
}

/** model.json and weights.bin of a model: {json: string, bin: ArrayBuffer} (see saveTfArtifacts). */
export async function exportArtifacts(handle, metadata) {
  return (await import("./trainer.js")).call("export", {id: handle.id, metadata});
}

/**
 * A model from the two exported files (File objects). The weights file must keep the name
 * model.json lists (browsers rename a second download to "weights (1).bin"). Resolves to a handle;
 * its metadata is handle.getUserDefinedMetadata().
 */
export async function importFiles(jsonFile, binFile) {
  if (!jsonFile || !binFile) throw new Error("Choose both files: model.json and weights.bin.");
  let manifest;
  const json = await jsonFile.text();
  try {
    manifest = JSON.parse(json);
  } catch {
    throw new Error(`${jsonFile.name} is not a model.json file (it is not valid JSON).`);
  }
  if (!manifest?.modelTopology || !Array.isArray(manifest.weightsManifest)) {
    throw new Error(`${jsonFile.name} is not a TF.js model.json (no modelTopology or weightsManifest).`);
  }
  const paths = manifest.weightsManifest.flatMap((group) => group.paths || []).map(basename);
  if (paths.length !== 1) throw new Error(`${jsonFile.name} lists ${paths.length} weight files; this lab reads one.`);
  if (paths[0] !== binFile.name) {
    throw new Error(`${jsonFile.name} expects its weights in "${paths[0]}", but the chosen file is named ` +
      `"${binFile.name}". Rename it to ${paths[0]} (browsers rename repeated downloads) and import again.`);
  }
  return loadFromArtifacts(json, await binFile.arrayBuffer());
}

/** A model from model.json's text and weights.bin's bytes (e.g. kept in IndexedDB). Resolves to a handle. */
export async function loadFromArtifacts(json, bin) {
  return (await import("./trainer.js")).load("artifacts", {json, bin}, [bin]);
}

/** A model from two (signed) URLs. Resolves to a handle. */
export async function loadFromUrls(jsonUrl, binUrl) {
  return (await import("./trainer.js")).load("urls", {jsonUrl, binUrl});
}
