// Training itself, inside the training worker (js/train-worker.js), so the page never freezes: a seeded,
// stratified split passed as validationData (fit's validationSplit takes the last rows before
// shuffling), the preprocessor fitted on the training rows only, early stopping on val_loss with our
// own restore-best-weights (TF.js's restoreBestWeights throws NotImplementedError), a stop flag, every
// tensor disposed, and the final metrics computed from predictions in the target's own units.
import {VALIDATION, fitPreprocessor, split, transform} from "./data.js";
import {accuracy, confusion, perClass, regressionMetrics, rocAuc} from "./metrics.js";
import {paramCount} from "./model.js";
import {buildModel, disposeTfModel} from "./model-tf.js";
import {getTf} from "./tfjs.js";

const MIN_SPLIT_ROWS = 10; // fewer rows than this: no hold-out at all
const EXPOSED_PREDICTIONS = 20_000; // validation predictions handed to the page (typed arrays: transferred, not cloned)
const MIN_DELTA = 0; // any decrease of val_loss counts as an improvement

/** The rows and preprocessing for a run: {trainRows, valRows, pre, heldOut}; the preprocessor sees training rows only. */
export function prepare(dataset, task, seed) {
  const fraction = dataset.validation ?? VALIDATION;
  let trainRows, valRows, heldOut;
  if (fraction <= 0 || dataset.rows.length < MIN_SPLIT_ROWS) {
    // XOR has four rows, one per pattern: holding any out would leave a pattern the model never sees.
    // Tiny datasets therefore train and validate on all their rows (val_loss is then the training loss).
    trainRows = valRows = dataset.rows;
    heldOut = false;
  } else {
    ({train: trainRows, val: valRows} = split(dataset.rows, dataset.target,
      {seed, validation: fraction, stratify: task !== "regression", task}));
    heldOut = true;
  }
  const pre = fitPreprocessor(trainRows, dataset.columns, task, dataset.target);
  return {trainRows, valRows, pre, heldOut};
}

/** The features the prediction form asks for, from the preprocessor: [{name, type, values?}]. */
export const featuresOf = (pre) => pre.features.map((f) => (f.type === "categorical"
  ? {name: f.name, type: f.type, values: f.vocabulary.filter((v) => v !== "__missing__")}
  : {name: f.name, type: f.type}));

const round = (v) => (typeof v === "number" && Number.isFinite(v) ? Number(v.toPrecision(7)) : null);

function evaluate(tf, model, x, y, batchSize) {
  const out = model.evaluate(x, y, {batchSize});
  const tensors = Array.isArray(out) ? out : [out];
  const values = tensors.map((t) => t.dataSync()[0]);
  tf.dispose(tensors);
  return {loss: values[0], acc: values[1]};
}

function outputsOf(tf, model, x) {
  const out = model.predict(x, {batchSize: 1024});
  const values = out.dataSync();
  out.dispose();
  return values;
}

/** Regression scores in the target's units: {rmse, mae, r2} for training and validation, and the validation pairs. */
function regressionScores(enc, train, val) {
  const units = (v) => v * (enc.std || 1) + enc.mean;
  const side = ({y, out}) => {
    const actual = y.map((r) => units(r[0])), predicted = Array.from(out, units);
    return {actual, predicted, ...regressionMetrics(actual, predicted)};
  };
  const t = side(train), v = val === train ? t : side(val);
  return {final: {rmse: t.rmse, val_rmse: v.rmse, mae: t.mae, val_mae: v.mae, r2: t.r2, val_r2: v.r2},
    exposed: {actual: Float64Array.from(v.actual.slice(0, EXPOSED_PREDICTIONS)),
      predicted: Float64Array.from(v.predicted.slice(0, EXPOSED_PREDICTIONS))}};
}

/** Classification scores: accuracy, the validation confusion matrix, per-class P/R/F1 and (binary) ROC AUC. */
function classificationScores(task, labels, train, val) {
  const classes = labels.length;
  const side = ({y, out}) => {
    const actual = [], predicted = [], scores = [];
    for (let i = 0; i < y.length; i++) {
      if (task === "binary") {
        actual.push(y[i][0]); scores.push(out[i]); predicted.push(out[i] >= 0.5 ? 1 : 0);
      } else {
        actual.push(y[i].indexOf(1));
        let best = 0;
        for (let k = 1; k < classes; k++) if (out[i * classes + k] > out[i * classes + best]) best = k;
        predicted.push(best);
      }
    }
    const matrix = confusion(actual, predicted, classes);
    return {actual, predicted, scores, matrix, acc: accuracy(matrix)};
  };
  const t = side(train), v = val === train ? t : side(val);
  const final = {confusion_matrix: v.matrix, per_class: perClass(v.matrix, labels)};
  const exposed = {actual: Int32Array.from(v.actual.slice(0, EXPOSED_PREDICTIONS)),
    predicted: Int32Array.from(v.predicted.slice(0, EXPOSED_PREDICTIONS))};
  if (task === "binary") {
    Object.assign(final, {auc: rocAuc(t.actual, t.scores), val_auc: rocAuc(v.actual, v.scores)});
    exposed.scores = Float32Array.from(v.scores.slice(0, EXPOSED_PREDICTIONS));
  }
  return {final, exposed};
}

function trainingRun(tf, spec, trainData, valData) {
  const tensors = (d) => [tf.tensor2d(d.x, [d.x.length, spec.inputs]), tf.tensor2d(d.y, [d.y.length, spec.outputs])];
  const [xTrain, yTrain] = tensors(trainData);
  const [xVal, yVal] = valData === trainData ? [xTrain, yTrain] : tensors(valData);
  return {xTrain, yTrain, xVal, yVal};
}

/**
 * Train a model for `draft` (the builder's spec fields plus epochs, batch_size, patience) on `dataset`
 * ({rows, columns, target, validation?}). beforeFit({spec, trainRows, valRows}) switches to the backend
 * for the run and resolves to its name; report({type: "begin"|"epoch", ...}) tells the page;
 * shouldStop() is asked after each batch. Resolves to {model, spec, preprocessor, metrics, exposed,
 * stopped, earlyStopped, bestEpoch, epochsRun, heldOut, elapsedMs}; the caller owns the model.
 */
export async function fitRun(dataset, draft, {report = () => {}, shouldStop = () => false, beforeFit} = {}) {
  const tf = getTf();
  const task = draft.task;
  const {trainRows, valRows, pre, heldOut} = prepare(dataset, task, draft.seed);
  const spec = {task, inputs: pre.inputs, outputs: pre.outputs,
    layers: draft.layers.map(({units, activation}) => ({units, activation})),
    optimizer: draft.optimizer, learning_rate: draft.learning_rate, seed: draft.seed,
    features: featuresOf(pre), target: dataset.target};
  const trainData = transform(pre, trainRows);
  const valData = valRows === trainRows ? trainData : transform(pre, valRows);
  if (!trainData.x.length) throw new Error("No training row has a usable target value.");
  if (!valData.x.length) throw new Error("No validation row has a usable target value.");

  const classification = task !== "regression";
  const enc = pre.target_encoding;
  // The backend may depend on the model's size, known only now; tensors are made on the backend chosen.
  const backend = await beforeFit({spec, trainRows: trainData.x.length, valRows: valData.x.length});
  const {xTrain, yTrain, xVal, yVal} = trainingRun(tf, spec, trainData, valData);
  let model = null;
  const batchSize = Math.min(draft.batch_size, trainData.x.length);
  const epochs = [];
  let best = {loss: Infinity, epoch: 0, weights: null};
  let wait = 0;
  let earlyStopped = false;
  const startedAt = new Date();
  const t0 = performance.now();
  const keepBest = (epoch) => {
    tf.dispose(best.weights);
    best = {loss: epochs[epochs.length - 1].val_loss, epoch, weights: model.getWeights().map((w) => w.clone())};
  };
  const unitsRmse = (mse) => (Number.isFinite(mse) ? round(Math.sqrt(mse) * (enc.std || 1)) : null);
  try {
    model = buildModel(spec);
    report({type: "begin", spec, backend, heldOut, trainRows: trainData.x.length, valRows: valData.x.length});
    await model.fit(xTrain, yTrain, {
      epochs: draft.epochs, batchSize, validationData: [xVal, yVal], verbose: 0,
      // The split already shuffled the rows with the seed; fit's own shuffle uses Math.random and
      // would make runs unrepeatable.
      shuffle: false,
      callbacks: {
        onBatchEnd: async () => { if (shouldStop()) model.stopTraining = true; },
        onEpochEnd: async (epoch, logs) => {
          const row = {epoch: epoch + 1, loss: round(logs.loss), val_loss: round(logs.val_loss)};
          if (classification) Object.assign(row, {acc: round(logs.acc ?? logs.accuracy), val_acc: round(logs.val_acc ?? logs.val_accuracy)});
          else Object.assign(row, {rmse: unitsRmse(logs.loss), val_rmse: unitsRmse(logs.val_loss)});
          epochs.push(row);
          const monitored = logs.val_loss;
          if (Number.isFinite(monitored) && monitored < best.loss - MIN_DELTA) {
            keepBest(epoch + 1);
            wait = 0;
          } else if (draft.patience > 0 && ++wait >= draft.patience) {
            earlyStopped = true;
            model.stopTraining = true;
          }
          if (shouldStop()) model.stopTraining = true;
          report({type: "epoch", epoch: epoch + 1, epochs: draft.epochs, row, elapsedMs: performance.now() - t0});
        },
      },
    });
    const stopped = epochs.length < draft.epochs && !earlyStopped;
    const epochsRun = epochs.length;
    if (best.weights !== null && best.epoch !== epochsRun) model.setWeights(best.weights);
    const trainScore = evaluate(tf, model, xTrain, yTrain, batchSize);
    const valScore = valData === trainData ? trainScore : evaluate(tf, model, xVal, yVal, batchSize);
    const final = {loss: round(trainScore.loss), val_loss: round(valScore.loss)};
    const trainOut = {y: trainData.y, out: outputsOf(tf, model, xTrain)};
    const valOut = valData === trainData ? trainOut : {y: valData.y, out: outputsOf(tf, model, xVal)};
    const scores = classification ? classificationScores(task, enc.labels, trainOut, valOut)
      : regressionScores(enc, trainOut, valOut);
    if (classification) Object.assign(final, {acc: round(trainScore.acc), val_acc: round(valScore.acc)});
    Object.assign(final, scores.final, {best_epoch: best.epoch || epochsRun});
    const metrics = {
      schema: 1, model_id: null, version: null, dataset_id: null, task,
      params: {layers: spec.layers, optimizer: spec.optimizer, learning_rate: spec.learning_rate, epochs: draft.epochs,
        batch_size: draft.batch_size, seed: spec.seed, patience: draft.patience, validation: heldOut ? (dataset.validation ?? VALIDATION) : 0,
        inputs: spec.inputs, outputs: spec.outputs, param_count: paramCount(spec), rows: dataset.rows.length,
        ...(classification ? {} : {target_mean: round(enc.mean), target_std: round(enc.std)})},
      epochs, final, backend,
      started_at: startedAt.toISOString(), finished_at: new Date().toISOString(),
    };
    return {model, spec, preprocessor: pre, metrics, exposed: scores.exposed, stopped, earlyStopped,
      bestEpoch: final.best_epoch, epochsRun, heldOut, elapsedMs: performance.now() - t0};
  } catch (err) {
    disposeTfModel(model);
    throw err;
  } finally {
    tf.dispose([xTrain, yTrain, xVal, yVal, best.weights]);
  }
}

const PROBE_BATCHES = 16; // batches per timed fit

/**
 * The time of one training batch of `spec` at `batchSize` on the current backend, in ms, as fit()
 * spends it (with a batch callback, as a real run has): warm-up batches for half of `budgetMs` (at
 * least 3), then one-epoch fits of 16 batches (at least 2, within `budgetMs`); the fastest counts,
 * since a busy machine only ever adds time.
 */
export async function stepTime(spec, batchSize, budgetMs = 300) {
  const tf = getTf();
  const model = buildModel(spec);
  const x = tf.randomNormal([batchSize * PROBE_BATCHES, spec.inputs], 0, 1, "float32", 1);
  const y = tf.zeros([batchSize * PROBE_BATCHES, spec.outputs]);
  const [xb, yb] = [x.slice([0, 0], [batchSize, spec.inputs]), y.slice([0, 0], [batchSize, spec.outputs])];
  try {
    // Warm-up: shader compilation, WASM start and the JavaScript JIT make the first batches slow.
    const warm = performance.now();
    for (let i = 0; i < 30 && (i < 3 || performance.now() - warm < budgetMs / 2); i++) await model.trainOnBatch(xb, yb);
    let fastest = Infinity;
    const start = performance.now();
    for (let runs = 0; runs < 5 && (runs < 2 || performance.now() - start < budgetMs); runs++) {
      const t = performance.now();
      await model.fit(x, y, {epochs: 1, batchSize, shuffle: false, verbose: 0, callbacks: {onBatchEnd: async () => {}}});
      fastest = Math.min(fastest, (performance.now() - t) / PROBE_BATCHES);
    }
    return fastest;
  } finally {
    tf.dispose([x, y, xb, yb]);
    disposeTfModel(model);
  }
}

const EPOCH_OVERHEAD_MS = 8; // fit's fixed work per epoch (setup, callbacks, the validation call, yields), measured on XOR

/** Milliseconds a run should take: every epoch's training batches plus its validation pass (about a third of a batch each). */
export const estimateMs = ({epochs, trainRows, valRows, batchSize, stepMs}) =>
  epochs * ((Math.ceil(trainRows / batchSize) + 0.35 * Math.ceil(valRows / batchSize)) * stepMs + EPOCH_OVERHEAD_MS);
