// Training in the browser: a seeded, stratified split passed
// as validationData (fit's validationSplit takes the last rows before shuffling), the preprocessor
// fitted on the training rows only, early stopping on val_loss with our own restore-best-weights
// (TF.js's restoreBestWeights throws NotImplementedError), a Stop button, and every tensor disposed.
// Loaded on demand by workbench.js, together with TF.js.
import {decodeOutput, fitPreprocessor, split, transform, transformFeatures} from "./data.js";
import {el, showMessage} from "./dom.js";
import {buildModel, disposeModel, paramCount} from "./model.js";
import {ensureTf} from "./tfjs.js";

export const VALIDATION = 0.2; // the share of rows held out when the dataset does not say
export const MIN_SPLIT_ROWS = 10; // fewer rows than this: no hold-out at all
const MIN_DELTA = 0; // any decrease of val_loss counts as an improvement

let current = null; // the model being trained: one run at a time

/** What train() throws when its signal was aborted before the first epoch. */
export class Cancelled extends Error {
  constructor() { super("Stopped before the first epoch."); this.name = "Cancelled"; }
}

/**
 * The rows and preprocessing for a run: {trainRows, valRows, pre, heldOut}. The preprocessor is
 * fitted on the training rows only.
 */
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

function confusionMatrix(tf, model, x, y, task, classes) {
  return tf.tidy(() => {
    const out = model.predict(x);
    const predicted = task === "binary" ? out.greaterEqual(0.5).reshape([-1]).toInt() : out.argMax(-1);
    const actual = task === "binary" ? y.reshape([-1]).toInt() : y.argMax(-1);
    return tf.math.confusionMatrix(actual, predicted, classes).arraySync();
  });
}

function evaluate(tf, model, x, y, batchSize) {
  const out = model.evaluate(x, y, {batchSize});
  const tensors = Array.isArray(out) ? out : [out];
  const values = tensors.map((t) => t.dataSync()[0]);
  tf.dispose(tensors);
  return {loss: values[0], acc: values[1]};
}

/**
 * Train a model for `draft` (the builder's spec fields plus epochs, batch_size, patience) on `dataset`.
 * onEpoch({epoch, epochs, logs, row, elapsedMs}) runs after each epoch; onBegin({spec, backend, ...})
 * once the model is built; aborting `signal` ends fit() after the current batch with the best
 * weights (or, before the model is built, rejects with Cancelled). Resolves to {model, spec,
 * preprocessor, metrics, dataset, stopped, earlyStopped, bestEpoch, epochsRun, heldOut, elapsedMs};
 * the caller owns (and disposes) the model.
 */
export async function train(dataset, draft, {onEpoch = () => {}, onBegin = () => {}, signal} = {}) {
  if (current) throw new Error("A training run is already going.");
  const {tf, backend} = await ensureTf();
  if (signal?.aborted) throw new Cancelled();
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
  const [xTrain, yTrain] = [tf.tensor2d(trainData.x, [trainData.x.length, spec.inputs]),
    tf.tensor2d(trainData.y, [trainData.y.length, spec.outputs])];
  const [xVal, yVal] = valData === trainData ? [xTrain, yTrain]
    : [tf.tensor2d(valData.x, [valData.x.length, spec.inputs]), tf.tensor2d(valData.y, [valData.y.length, spec.outputs])];
  let model = null;
  const halt = () => { if (model) model.stopTraining = true; };
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
  try {
    model = buildModel(spec);
    current = model;
    signal?.addEventListener("abort", halt);
    onBegin({spec, backend, heldOut, trainRows: trainData.x.length, valRows: valData.x.length});
    await model.fit(xTrain, yTrain, {
      epochs: draft.epochs, batchSize, validationData: [xVal, yVal], verbose: 0,
      // The split already shuffled the rows with the seed; fit's own shuffle uses Math.random and
      // would make runs unrepeatable.
      shuffle: false,
      callbacks: {
        onTrainBegin: async () => { if (signal?.aborted) halt(); }, // fit() clears stopTraining when it starts
        onEpochEnd: async (epoch, logs) => {
          const row = {epoch: epoch + 1, loss: round(logs.loss), val_loss: round(logs.val_loss)};
          if (classification) Object.assign(row, {acc: round(logs.acc ?? logs.accuracy), val_acc: round(logs.val_acc ?? logs.val_accuracy)});
          epochs.push(row);
          const monitored = logs.val_loss;
          if (Number.isFinite(monitored) && monitored < best.loss - MIN_DELTA) {
            keepBest(epoch + 1);
            wait = 0;
          } else if (draft.patience > 0 && ++wait >= draft.patience) {
            earlyStopped = true;
            model.stopTraining = true;
          }
          onEpoch({epoch: epoch + 1, epochs: draft.epochs, logs, row, elapsedMs: performance.now() - t0});
        },
      },
    });
    const stopped = epochs.length < draft.epochs && !earlyStopped;
    const epochsRun = epochs.length;
    const restored = best.weights !== null && best.epoch !== epochsRun;
    if (restored) model.setWeights(best.weights);
    const trainScore = evaluate(tf, model, xTrain, yTrain, batchSize);
    const valScore = valData === trainData ? trainScore : evaluate(tf, model, xVal, yVal, batchSize);
    const final = {loss: round(trainScore.loss), val_loss: round(valScore.loss)};
    if (classification) {
      const classes = pre.target_encoding.labels.length;
      Object.assign(final, {acc: round(trainScore.acc), val_acc: round(valScore.acc),
        confusion_matrix: confusionMatrix(tf, model, xVal, yVal, task, classes)});
    }
    final.best_epoch = best.epoch || epochsRun;
    const metrics = {
      schema: 1, model_id: null, version: null, dataset_id: null, task,
      params: {layers: spec.layers, optimizer: spec.optimizer, learning_rate: spec.learning_rate, epochs: draft.epochs,
        batch_size: draft.batch_size, seed: spec.seed, patience: draft.patience, validation: heldOut ? (dataset.validation ?? VALIDATION) : 0,
        inputs: spec.inputs, outputs: spec.outputs, param_count: paramCount(spec)},
      epochs, final, backend: backend.name,
      started_at: startedAt.toISOString(), finished_at: new Date().toISOString(),
    };
    return {model, spec, preprocessor: pre, metrics, dataset, stopped, earlyStopped,
      bestEpoch: final.best_epoch, epochsRun, heldOut, elapsedMs: performance.now() - t0};
  } catch (err) {
    disposeModel(model);
    throw err;
  } finally {
    current = null;
    signal?.removeEventListener("abort", halt);
    tf.dispose([xTrain, yTrain, xVal, yVal, best.weights]);
  }
}

/**
 * Predict one raw row ({feature: value}, strings from a form are fine) with a trained or imported
 * model -> {output: number[], label?, probabilities?: [{label, p}], value?}.
 */
export async function predict(model, preprocessor, row) {
  const {tf} = await ensureTf();
  const vector = transformFeatures(preprocessor, row);
  const output = tf.tidy(() => Array.from(model.predict(tf.tensor2d([vector], [1, vector.length])).dataSync()));
  return {output, ...decodeOutput(preprocessor, output)};
}

// --- results: the metrics table, the confusion matrix and the prediction form --------------------

const show = (v) => (typeof v !== "number" ? "—" : Number.isInteger(v) ? String(v) : v.toPrecision(4));
const pct = (p) => `${(100 * p).toFixed(p > 0.999 || p < 0.001 ? 2 : 1)} %`;

function metricsTable(metrics) {
  const {final} = metrics;
  const rows = [["Loss", final.loss, final.val_loss]];
  if (final.acc !== undefined) rows.push(["Accuracy", final.acc, final.val_acc]);
  const table = el("table", {id: "metrics-table", className: "results"},
    el("caption", {textContent: `Final metrics (weights of epoch ${final.best_epoch}, ${metrics.backend})`}),
    el("thead", {}, el("tr", {}, ...["Metric", "Training", "Validation"].map((t) => el("th", {scope: "col", textContent: t})))),
    el("tbody", {}, ...rows.map(([name, train, val]) => el("tr", {}, el("th", {scope: "row", textContent: name}),
      el("td", {textContent: show(train)}), el("td", {textContent: show(val)})))));
  table.dataset.final = JSON.stringify(final);
  return table;
}

function confusionTable(matrix, labels) {
  const table = el("table", {id: "confusion-matrix", className: "results"},
    el("caption", {textContent: "Confusion matrix on the validation rows (rows: actual, columns: predicted)"}),
    el("thead", {}, el("tr", {}, el("td"), ...labels.map((l) => el("th", {scope: "col", textContent: `predicted ${l}`})))),
    el("tbody", {}, ...matrix.map((row, i) => el("tr", {}, el("th", {scope: "row", textContent: `actual ${labels[i]}`}),
      ...row.map((n, j) => el("td", {textContent: String(n), className: i === j ? "hit" : n ? "miss" : ""}))))));
  table.dataset.matrix = JSON.stringify(matrix);
  return table;
}

function predictForm(trained) {
  const pre = trained.preprocessor;
  const inputs = featuresOf(pre).map((f, i) => {
    const control = f.type === "categorical"
      ? el("select", {id: `predict-${i}`, name: f.name}, ...f.values.map((v) => el("option", {value: v, textContent: v})),
        el("option", {value: "", textContent: "(missing)"}))
      : el("input", {id: `predict-${i}`, name: f.name, type: "text", inputMode: "decimal", autocomplete: "off",
        placeholder: "blank: the mean"});
    return el("div", {className: "field"}, el("label", {htmlFor: control.id, textContent: f.name}), control);
  });
  const output = el("output", {id: "prediction"});
  output.setAttribute("aria-live", "polite");
  const form = el("form", {id: "predict-form"},
    el("fieldset", {}, el("legend", {textContent: `Predict ${pre.target}`}), el("div", {className: "grid"}, ...inputs),
      el("button", {type: "submit", textContent: "Predict"})), output);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const row = Object.fromEntries(inputs.map((box) => {
      const control = box.querySelector("input, select");
      return [control.name, control.value];
    }));
    try {
      const result = await predict(trained.model, pre, row);
      output.classList.remove("problem");
      output.dataset.output = JSON.stringify(result.output);
      if ("value" in result) {
        output.dataset.value = String(result.value);
        output.replaceChildren(el("strong", {textContent: `Prediction: ${show(result.value)}`}));
      } else {
        output.dataset.label = String(result.label);
        output.replaceChildren(el("strong", {textContent: `Prediction: ${result.label}`}),
          el("ul", {className: "probabilities"}, ...result.probabilities.map(({label, p}) =>
            el("li", {textContent: `${label}: ${pct(p)}`}))));
      }
    } catch (err) {
      output.classList.add("problem");
      output.replaceChildren(`The prediction failed: ${err.message}`);
    }
  });
  return form;
}

// Batch predictions: a CSV in, the same CSV back with prediction columns, all in this page (js/batch.js).
function batchForm(trained) {
  const file = el("input", {type: "file", id: "batch-file", accept: ".csv,text/csv"});
  const button = el("button", {type: "submit", id: "batch-button", textContent: "Predict the file"});
  const status = el("p", {id: "batch-status", className: "hint"});
  status.setAttribute("role", "status");
  const link = el("p", {id: "batch-result"});
  const form = el("form", {id: "batch-form"},
    el("fieldset", {}, el("legend", {textContent: "Predict a CSV file"}),
      el("p", {className: "hint", textContent: "Every row gets the model's prediction; the file never leaves this browser."}),
      el("div", {className: "import"},
        el("div", {className: "field"}, el("label", {htmlFor: "batch-file", textContent: "CSV file with the feature columns"}), file),
        button),
      status, link));
  let url = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) { showMessage(status, "Choose a CSV file first.", true); return; }
    button.disabled = true;
    link.replaceChildren();
    showMessage(status, `Reading ${chosen.name}…`);
    try {
      const {predictCsv} = await import("./batch.js");
      const result = await predictCsv(trained.model, trained.preprocessor, chosen, {
        onProgress: (done, total) => showMessage(status, `Predicted ${done.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} rows…`)});
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(new Blob([result.csv], {type: "text/csv"}));
      const name = `${chosen.name.replace(/\.csv$/i, "")}-predictions.csv`;
      const anchor = el("a", {href: url, download: name, id: "batch-download", textContent: `Download ${name}`});
      anchor.dataset.rows = String(result.rows);
      link.replaceChildren(anchor);
      showMessage(status, `Predicted ${result.rows.toLocaleString("en-US")} rows; added ${result.columns.join(", ")}.`);
    } catch (err) {
      showMessage(status, `The file could not be predicted: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** Show a trained or imported model ({model, spec, preprocessor, metrics, source}) in `container`. */
export function renderResults(container, trained) {
  const parts = [];
  if (trained.metrics) {
    const scroll = (table) => el("div", {className: "scroll"}, table); // wide tables scroll, not the page
    parts.push(scroll(metricsTable(trained.metrics)));
    const matrix = trained.metrics.final.confusion_matrix;
    if (matrix && trained.preprocessor) parts.push(scroll(confusionTable(matrix, trained.preprocessor.target_encoding.labels)));
  } else {
    parts.push(el("p", {className: "hint", textContent: `Model from ${trained.source || "elsewhere"}; it has no training metrics here.`}));
  }
  if (trained.preprocessor) parts.push(predictForm(trained), batchForm(trained));
  container.replaceChildren(...parts);
}
