// The workbench's builder, training and files panels. This module runs on every page load, so it
// stays small: TF.js, uPlot and the training code load only when the person trains or imports.
import {ACTIVATIONS, LIMITS, OPTIMIZERS, TASKS, paramCount, validate} from "./model.js";
import {$, el, showMessage} from "./dom.js";
import {duration, number} from "./format.js";
import {BACKENDS, LABEL, describeBackend, saveChoice, savedChoice} from "./tfjs.js";
import {LARGE_ROWS, VALIDATION} from "./data.js";
import {state} from "./state.js";
import {clear, restore, watch} from "./persist.js";

const STORAGE_KEY = "mllab.builder.v1";
const DEFAULTS = {task: "auto", layers: [{units: 8, activation: "tanh"}], optimizer: "adam", learning_rate: 0.01,
  epochs: 300, batch_size: 32, seed: 1, patience: 50};
const ASSUMED = {inputs: 2, outputs: 1}; // until a dataset says otherwise (the XOR demo's shape)
const TASK_NAMES = {binary: "Binary classification", multiclass: "Multiclass classification", regression: "Regression"};

const option = (value, text, selected) => el("option", {value, textContent: text, selected});
function field(labelText, control, hint) { // label[for], not a wrapping label: a wrapped <select>'s value
  const label = el("label", {htmlFor: control.id, textContent: labelText}); // would join its accessible name
  return el("div", {className: "field"}, label, control, hint ? el("small", {textContent: hint}) : null);
}

// --- the draft (localStorage) ------------------------------------------------------------------

function loadDraft() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    if (saved && typeof saved === "object" && Array.isArray(saved.layers)) {
      const draft = {...DEFAULTS, ...saved};
      if (draft.task !== "auto" && !TASKS[draft.task]) draft.task = "auto";
      if (!OPTIMIZERS.includes(draft.optimizer)) draft.optimizer = DEFAULTS.optimizer;
      draft.layers = saved.layers.slice(0, LIMITS.layers)
        .map((l) => ({units: l?.units ?? null, activation: ACTIVATIONS.includes(l?.activation) ? l.activation : "relu"}));
      return draft;
    }
  } catch { /* a broken draft: start over */ }
  return structuredClone(DEFAULTS);
}
let draft = loadDraft();
const saveDraft = () => { try { localStorage.setItem(STORAGE_KEY, JSON.stringify(draft)); } catch { /* private mode */ } };

// --- what the panels share ---------------------------------------------------------------------

let dataset = state.dataset;
let shape = {...ASSUMED, assumed: true, problems: []}; // the network's input and output widths
let training = false;
let trained = null; // state.model as this page last saw it
const resolvedTask = () => (draft.task === "auto" ? dataset?.task || "binary" : draft.task);
const draftForRun = () => ({...draft, task: resolvedTask()});

// --- builder -----------------------------------------------------------------------------------

const builder = $("builder-panel");
const taskSelect = el("select", {id: "b-task"});
const layerList = el("ol", {id: "b-layers", className: "layers"});
const addLayer = el("button", {type: "button", id: "b-add-layer", textContent: "Add a hidden layer"});
const numberInput = (id, props) => el("input", {id, type: "number", inputMode: "decimal", ...props});
const optimizerSelect = el("select", {id: "b-optimizer"}, ...OPTIMIZERS.map((o) => option(o, o === "adam" ? "Adam" : "SGD")));
const lrInput = numberInput("b-lr", {step: "any", min: "0"});
const epochsInput = numberInput("b-epochs", {step: "1", min: "1", max: String(LIMITS.epochs), inputMode: "numeric"});
const batchInput = numberInput("b-batch", {step: "1", min: "1", inputMode: "numeric"});
const seedInput = numberInput("b-seed", {step: "1", min: "0", inputMode: "numeric"});
const patienceInput = numberInput("b-patience", {step: "1", min: "0", inputMode: "numeric"});
const summary = el("p", {id: "param-count", className: "summary"});
summary.setAttribute("aria-live", "polite");
const errors = el("ul", {id: "builder-errors", className: "problems"});
errors.setAttribute("role", "alert");
const SCALARS = [[lrInput, "learning_rate"], [epochsInput, "epochs"], [batchInput, "batch_size"], [seedInput, "seed"],
  [patienceInput, "patience"]];

builder.append(el("h3", {textContent: "Model"}),
  el("form", {id: "builder-form", noValidate: true},
    field("Task", taskSelect),
    el("fieldset", {className: "layers-box"}, el("legend", {textContent: "Hidden layers"}), layerList, addLayer),
    el("div", {className: "grid"},
      field("Optimizer", optimizerSelect),
      field("Learning rate", lrInput),
      field("Epochs", epochsInput),
      field("Batch size", batchInput),
      field("Seed", seedInput),
      field("Early-stopping patience", patienceInput, "epochs without a better validation loss; 0 turns it off")),
    summary, errors));

function renderTaskOptions() {
  const fromData = dataset ? `Same as the dataset (${dataset.task})` : "Same as the dataset";
  taskSelect.replaceChildren(option("auto", fromData, draft.task === "auto"),
    ...Object.keys(TASKS).map((t) => option(t, TASK_NAMES[t], draft.task === t)));
}

function renderLayers(focus) {
  layerList.replaceChildren(...draft.layers.map((layer, i) => {
    const units = numberInput(`b-units-${i}`, {step: "1", min: "1", max: String(LIMITS.units), inputMode: "numeric",
      value: layer.units ?? ""});
    const activation = el("select", {id: `b-activation-${i}`}, ...ACTIVATIONS.map((a) => option(a, a, a === layer.activation)));
    const remove = el("button", {type: "button", textContent: "Remove", className: "remove"});
    remove.setAttribute("aria-label", `Remove hidden layer ${i + 1}`);
    remove.addEventListener("click", () => {
      draft.layers.splice(i, 1);
      renderLayers(draft.layers.length ? `b-units-${Math.max(0, i - 1)}` : "b-add-layer");
      changed();
    });
    return el("li", {}, field(`Layer ${i + 1} units`, units), field(`Layer ${i + 1} activation`, activation), remove);
  }));
  if (draft.layers.length === 0) layerList.append(el("li", {className: "empty", textContent: "No hidden layer: a linear model."}));
  addLayer.disabled = draft.layers.length >= LIMITS.layers;
  if (focus) $(focus)?.focus();
}

addLayer.addEventListener("click", () => {
  const last = draft.layers[draft.layers.length - 1];
  draft.layers.push({units: last?.units || 8, activation: last?.activation || "relu"});
  renderLayers(`b-units-${draft.layers.length - 1}`);
  changed();
});

function fillForm() {
  renderTaskOptions();
  renderLayers();
  optimizerSelect.value = draft.optimizer;
  for (const [input, key] of SCALARS) input.value = draft[key] ?? "";
}

const num = (input) => (input.value.trim() === "" ? null : Number(input.value));
function readForm() {
  draft.task = taskSelect.value;
  draft.layers = draft.layers.map((_, i) => ({units: num($(`b-units-${i}`)), activation: $(`b-activation-${i}`).value}));
  draft.optimizer = optimizerSelect.value;
  for (const [input, key] of SCALARS) draft[key] = num(input);
}

$("builder-form").addEventListener("input", () => { readForm(); changed(); });
$("builder-form").addEventListener("change", (event) => {
  readForm();
  if (event.target === taskSelect) refreshShape(); else changed();
});
$("builder-form").addEventListener("submit", (event) => event.preventDefault());

const FIELD_INPUTS = {task: () => taskSelect, optimizer: () => optimizerSelect,
  ...Object.fromEntries(SCALARS.map(([input, key]) => [key, () => input]))};
function inputFor(fieldName) {
  const m = /^layers\.(\d+)\.(units|activation)$/.exec(fieldName);
  if (m) return $(`b-${m[2]}-${m[1]}`);
  return FIELD_INPUTS[fieldName]?.();
}

// The data side decides the widths: the preprocessor one-hot encodes categories, and multiclass
// targets have one output per class. js/data.js is already loaded by the data panel.
let shapeFor = null;
async function refreshShape() {
  const data = dataset ? await import("./data.js") : null;
  if (!dataset) {
    shape = {...ASSUMED, assumed: true, problems: []};
  } else {
    const task = resolvedTask();
    if (shapeFor?.dataset !== dataset || shapeFor.task !== task) {
      let next = {inputs: 0, outputs: 0, assumed: false, problems: data.validateDataset({...dataset, task})};
      if (!next.problems.length) {
        try {
          const pre = data.fitPreprocessor(dataset.rows, dataset.columns, task, dataset.target);
          next = {...next, inputs: pre.inputs, outputs: pre.outputs};
        } catch (err) {
          next.problems = [err.message];
        }
      }
      shapeFor = {dataset, task, shape: next};
    }
    shape = shapeFor.shape;
  }
  changed();
}

function problemsNow() {
  return [...validate(draftForRun()), ...shape.problems.map((message) => ({field: "dataset", message}))];
}

function changed() {
  saveDraft();
  const problems = problemsNow();
  const invalid = new Set(problems.map((p) => inputFor(p.field)).filter(Boolean));
  builder.querySelectorAll("input, select").forEach((c) => {
    if (invalid.has(c)) c.setAttribute("aria-invalid", "true"); else c.removeAttribute("aria-invalid");
  });
  errors.replaceChildren(...problems.map((p) => el("li", {textContent: p.message})));
  const task = resolvedTask();
  const layersOk = draft.layers.every((l) => Number.isInteger(l.units) && l.units > 0);
  if (layersOk && TASKS[task] && !shape.problems.length) {
    const count = paramCount({inputs: shape.inputs, outputs: shape.outputs, layers: draft.layers});
    const widths = [`${shape.inputs} input${shape.inputs === 1 ? "" : "s"}`,
      ...draft.layers.map((l) => `${l.units} ${l.activation}`),
      `${shape.outputs} ${TASKS[task].activation} output${shape.outputs === 1 ? "" : "s"}`];
    summary.textContent = `${widths.join(" → ")}: ${count.toLocaleString("en-US")} parameters` +
      (shape.assumed ? " (assuming 2 inputs and 1 output until a dataset is loaded)" : "");
    summary.dataset.count = String(count);
  } else {
    summary.textContent = "The parameter count shows once the layers are valid.";
    delete summary.dataset.count;
  }
  updateTrainButton(problems);
  scheduleEstimate();
}

// --- training ------------------------------------------------------------------------------------

const panel = $("train-panel");
const trainButton = el("button", {type: "button", id: "train-button", className: "primary large", textContent: "Train"});
const stopButton = el("button", {type: "button", id: "stop-button", textContent: "Stop", disabled: true});
const hint = el("p", {id: "train-hint", className: "hint"});
const progress = el("p", {id: "train-progress"});
progress.setAttribute("role", "status");
const message = el("p", {id: "train-message", tabIndex: -1});
message.setAttribute("aria-live", "polite");
const chartBox = el("div", {id: "train-chart", className: "charts"});
const results = el("div", {id: "train-results"});
const backendSelect = el("select", {id: "backend-select"},
  option("auto", "Auto: the fastest, measured", false), ...BACKENDS.map((b) => option(b, LABEL[b], false)));
backendSelect.value = savedChoice();
const estimateLine = el("p", {id: "train-estimate", className: "hint"});
estimateLine.setAttribute("aria-live", "polite");
panel.dataset.state = "idle";
panel.append(el("h3", {textContent: "Training"}),
  el("div", {className: "backend-choice"}, field("Backend", backendSelect,
    "where TF.js computes: Auto measures each backend on a small model and keeps the fastest")),
  el("p", {className: "buttons"}, trainButton, " ", stopButton),
  hint, estimateLine, progress, message, chartBox, results);

function updateTrainButton(problems = problemsNow()) {
  const fromData = problems.find((p) => p.field === "dataset");
  const why = training ? "" : !dataset ? "Load a dataset first (the XOR demo is one click)."
    : fromData ? `The dataset is not ready: ${fromData.message}` : problems.length ? "Fix the model settings above to train." : "";
  trainButton.disabled = training || Boolean(why);
  hint.textContent = why;
}

const say = (text, problem = false) => showMessage(message, text, problem, "status");

const backendStatus = $("backend-status");
function showBackend(backend) {
  if (!backend) return;
  backendStatus.textContent = describeBackend(backend);
  backendStatus.dataset.backend = backend.name;
  backendSelect.dataset.active = backend.name;
  if (backend.reason) backendStatus.dataset.reason = backend.reason; else delete backendStatus.dataset.reason;
}
backendStatus.textContent = `Backend: picked when you train (TF.js loads on demand, off the page's thread)` +
  (backendSelect.value === "auto" ? "." : `; ${LABEL[backendSelect.value]} chosen.`);
backendSelect.addEventListener("change", async () => {
  saveChoice(backendSelect.value);
  (await import("./trainer.js")).setChoice(backendSelect.value);
  scheduleEstimate();
});

// The time a run should take, before it starts: measured on a few batches in the worker (large datasets only).
function describeEstimate({backend, stepMs, ms}, epochs) {
  return `Estimated training time: about ${duration(ms)} for ${number(epochs)} epochs on ${LABEL[backend.name]} ` +
    `(measured ${number(Number(stepMs.toFixed(2)))} ms a batch)${draft.patience > 0 ? "; early stopping may end it sooner" : ""}.`;
}
let estimateTimer = null, estimateFor = 0;
function scheduleEstimate() {
  clearTimeout(estimateTimer);
  const mine = ++estimateFor;
  const rows = dataset?.rows.length || 0;
  if (rows < LARGE_ROWS || shape.assumed || shape.problems.length || training || problemsNow().length) {
    if (!training) estimateLine.textContent = "";
    return;
  }
  estimateTimer = setTimeout(async () => {
    const run = draftForRun();
    const valRows = Math.round(rows * (dataset.validation ?? VALIDATION));
    const spec = {task: run.task, inputs: shape.inputs, outputs: shape.outputs, layers: run.layers,
      optimizer: run.optimizer, learning_rate: run.learning_rate, seed: run.seed};
    estimateLine.textContent = "Measuring how long training will take…";
    try {
      const trainer = await import("./trainer.js");
      const batchSize = Math.min(run.batch_size, rows - valRows);
      const result = await trainer.estimate({spec, batchSize, epochs: run.epochs, trainRows: rows - valRows, valRows});
      if (mine !== estimateFor || training) return;
      estimateLine.textContent = describeEstimate(result, run.epochs);
      estimateLine.dataset.ms = String(Math.round(result.ms));
      showBackend(result.backend);
    } catch (err) {
      if (mine === estimateFor && !training) estimateLine.textContent = `The training time could not be estimated: ${err.message}`;
    }
  }, 600);
}

function outcome(result, backend) {
  const {stopped, earlyStopped, bestEpoch, epochsRun, metrics, elapsedMs} = result;
  const parts = [];
  if (stopped) parts.push(`Stopped at epoch ${epochsRun} of ${metrics.params.epochs} after ${duration(elapsedMs)}.`);
  else if (earlyStopped) {
    parts.push(`Stopped early at epoch ${epochsRun}: the validation loss had not improved for ${metrics.params.patience} epochs.`);
  } else parts.push(`Trained ${epochsRun} epochs in ${duration(elapsedMs)} on ${backend}.`);
  if (stopped || earlyStopped || bestEpoch !== epochsRun) {
    parts.push(`The model keeps the best weights, from epoch ${bestEpoch} (lowest validation loss).`);
  }
  if (result.metrics.final.loss === null && !result.metrics.epochs.some((r) => r.loss === null)) {
    parts.push("The loss diverged (NaN): try a lower learning rate.");
  }
  if (!result.heldOut) parts.push("The dataset is too small to hold rows out, so the validation loss is measured on the training rows.");
  return parts.join(" ");
}

let chart = null; // the live chart of the last run
let stopper = null; // the AbortController of the run going on (Stop aborts it)
async function startTraining() {
  if (training || trainButton.disabled) return;
  const run = draftForRun();
  const data = dataset;
  stopper = new AbortController();
  const {signal} = stopper;
  training = true;
  clearTimeout(estimateTimer);
  estimateFor++;
  // The Train button is disabled while it runs: the keyboard focus moves to Stop, not to the page.
  const hadFocus = [trainButton, document.body, null].includes(document.activeElement);
  updateTrainButton();
  stopButton.disabled = false;
  if (hadFocus) stopButton.focus();
  panel.dataset.state = "loading";
  say("");
  progress.textContent = "Loading TensorFlow.js in the background…";
  try {
    const [trainer, charts] = await Promise.all([import("./train.js"), import("./chart.js")]);
    (await import("./trainer.js")).setChoice(backendSelect.value);
    chart?.destroy();
    chart = null;
    chart = await charts.createChart(chartBox, {classification: run.task !== "regression"});
    for (const k of ["firstLoss", "finalLoss", "finalAcc", "epochsRun", "epoch", "elapsedMs", "bestEpoch"]) delete panel.dataset[k];
    let last = 0;
    const result = await trainer.train(data, run, {signal,
      onEstimate: (estimate) => {
        showBackend(estimate.backend);
        estimateLine.textContent = describeEstimate(estimate, run.epochs);
        estimateLine.dataset.ms = String(Math.round(estimate.ms));
        progress.textContent = `Starting on ${LABEL[estimate.backend.name]}…`;
      },
      onBegin: ({trainRows, valRows, heldOut}) => {
        panel.dataset.state = "training";
        progress.textContent = `Training on ${number(trainRows)} rows, validating on ${number(valRows)}${heldOut ? "" : " (the same rows)"}…`;
      },
      onEpoch: ({epoch, epochs, row, elapsedMs}) => {
        if (epoch === 1) panel.dataset.firstLoss = String(row.loss);
        panel.dataset.epoch = String(epoch);
        chart.add(row);
        const now = performance.now();
        if (now - last < 100 && epoch !== epochs) return; // the text changes ten times a second at most
        last = now;
        const eta = (elapsedMs / epoch) * (epochs - epoch);
        progress.textContent = `Epoch ${epoch} of ${epochs} · ${duration(elapsedMs)} elapsed · about ${duration(eta)} left` +
          ` · loss ${number(row.loss)}`;
      },
    });
    chart.setBest(result.bestEpoch);
    chart.flush();
    showBackend(result.backend);
    progress.textContent = `Epoch ${result.epochsRun} of ${run.epochs} · ${duration(result.elapsedMs)} elapsed`;
    Object.assign(panel.dataset, {finalLoss: String(result.metrics.final.loss), epochsRun: String(result.epochsRun),
      bestEpoch: String(result.bestEpoch), elapsedMs: String(Math.round(result.elapsedMs)),
      state: result.stopped ? "stopped" : result.earlyStopped ? "early-stopped" : "done"});
    if (result.metrics.final.acc !== undefined) panel.dataset.finalAcc = String(result.metrics.final.acc);
    say(outcome(result, result.backend.name));
    state.set("model", {model: result.model, spec: result.spec, preprocessor: result.preprocessor,
      metrics: result.metrics, heldOut: result.heldOut, validation: result.exposed, dataset: data, source: "trained"});
  } catch (err) {
    chart?.flush();
    progress.textContent = "";
    const cancelled = err.name === "Cancelled";
    panel.dataset.state = cancelled ? "idle" : "error";
    if (cancelled) say(err.message); else say(`Training failed: ${err.message}`, true);
  } finally {
    training = false;
    stopper = null;
    const focusWasHere = [stopButton, document.body, null].includes(document.activeElement);
    stopButton.disabled = true;
    updateTrainButton();
    // Done: the focus goes to the outcome (what happened; the metrics and the prediction form follow it).
    if (focusWasHere) (message.textContent ? message : trainButton).focus({preventScroll: true});
  }
}

// Leaving the page during a run would lose it: the browser asks first.
window.addEventListener("beforeunload", (event) => {
  if (!training) return;
  event.preventDefault();
  event.returnValue = ""; // Chromium before 119 asks only when this is set
});

/** Merge settings into the builder's draft (a guided first run sets a model that fits its dataset). */
export function applyDraft(patch) {
  draft = {...draft, ...structuredClone(patch)};
  fillForm();
  refreshShape();
}

/** Train now, as the Train button does: resolves when the run ends (or at once when it cannot start). */
export function trainNow() {
  return startTraining();
}

trainButton.addEventListener("click", startTraining);
stopButton.addEventListener("click", () => {
  stopButton.disabled = true;
  stopper?.abort();
  say("Stopping after this batch…");
});

// --- files ---------------------------------------------------------------------------------------

const files = $("files-panel");
const exportButton = el("button", {type: "button", id: "export-button", textContent: "Export model.json + weights.bin",
  disabled: true});
const links = el("p", {id: "export-links", className: "hint"});
const picker = el("input", {type: "file", id: "import-files", multiple: true, accept: ".json,.bin,application/json"});
const importButton = el("button", {type: "button", id: "import-button", textContent: "Import"});
const filesMessage = el("p", {id: "files-message"});
filesMessage.setAttribute("aria-live", "polite");
files.append(el("h3", {textContent: "Files"}),
  el("p", {className: "hint", textContent: "Export saves two files, model.json and weights.bin, that TensorFlow.js " +
    "loads anywhere. Your browser may ask whether this page may download multiple files: allow it. Keep both " +
    "names as they are (a second copy named “weights (1).bin” will not import)."}),
  el("p", {className: "buttons"}, exportButton), links,
  el("div", {className: "import"}, field("Model files to import (model.json and weights.bin)", picker), importButton),
  filesMessage);

const tell = (text, problem = false) => showMessage(filesMessage, text, problem, "status");

let urls = [];
exportButton.addEventListener("click", async () => {
  if (!trained?.model) return;
  exportButton.disabled = true;
  try {
    const {exportArtifacts} = await import("./model.js");
    const {json, bin} = await exportArtifacts(trained.model, {preprocessor: trained.preprocessor, spec: trained.spec});
    urls.forEach((u) => URL.revokeObjectURL(u));
    const made = [["model.json", new Blob([json], {type: "application/json"})],
      ["weights.bin", new Blob([bin], {type: "application/octet-stream"})]];
    urls = made.map(([, blob]) => URL.createObjectURL(blob));
    const anchors = made.map(([name], i) => el("a", {href: urls[i], download: name, textContent: name}));
    for (const a of anchors.map((a) => a.cloneNode(true))) { document.body.append(a); a.click(); a.remove(); }
    links.replaceChildren("If a file did not download, save it from here: ", anchors[0], " · ", anchors[1]);
    tell(`Exported model.json (${json.length.toLocaleString("en-US")} bytes) and weights.bin ` +
      `(${bin.byteLength.toLocaleString("en-US")} bytes).`);
  } catch (err) {
    tell(`Export failed: ${err.message}`, true);
  } finally {
    exportButton.disabled = !trained?.model;
  }
});

importButton.addEventListener("click", async () => {
  const chosen = [...picker.files];
  const json = chosen.find((f) => f.name.toLowerCase().endsWith(".json"));
  const bin = chosen.find((f) => f !== json);
  if (chosen.length !== 2 || !json || !bin) {
    tell("Choose the two exported files together: model.json and weights.bin.", true);
    return;
  }
  importButton.disabled = true;
  tell("Importing…");
  try {
    const {importFiles} = await import("./model.js");
    const model = await importFiles(json, bin);
    showBackend(model.backend);
    const meta = model.getUserDefinedMetadata() || {};
    state.set("model", {model, spec: meta.spec || null, preprocessor: meta.preprocessor || null, metrics: null,
      dataset: null, source: `files: ${json.name} + ${bin.name}`});
    tell(meta.preprocessor ? `Imported ${json.name} and ${bin.name}.`
      : `Imported ${json.name}, but it has no preprocessing metadata, so the prediction form cannot use it.`);
  } catch (err) {
    tell(`Import failed: ${err.message}`, true);
  } finally {
    importButton.disabled = false;
  }
});

// --- the shared state ------------------------------------------------------------------------------

let warmed = false;
state.on("dataset", (next) => {
  dataset = next;
  if (next && !warmed) { // the chart library and the browser's canvas get ready while the person looks at the data
    warmed = true;
    const idle = globalThis.requestIdleCallback || ((f) => setTimeout(f, 200));
    // (and the training modules compile now rather than in the first moments of a run)
    idle(() => Promise.all([import("./chart.js").then((c) => c.warmUp()), import("./train.js")]).catch(() => { warmed = false; }),
      {timeout: 1000});
  }
  renderTaskOptions();
  refreshShape();
});

state.on("model", async (next) => {
  const previous = trained;
  trained = next;
  exportButton.disabled = !next?.model;
  if (previous?.model && previous.model !== next?.model) (await import("./model.js")).disposeModel(previous.model);
  if (!next?.model) { results.replaceChildren(); return; }
  showBackend(next.model.backend);
  const {renderResults} = await import("./train.js");
  await new Promise((resolve) => setTimeout(resolve)); // a task of its own: the run's end already did enough
  if (trained !== next) return;
  renderResults(results, next);
  // A run that did not happen on this page (restored after a reload, or loaded from the cloud) shows its curves too.
  if (next.metrics?.epochs?.length && (next.source !== "trained" || next.restored)) await showSavedRun(next);
});

async function showSavedRun(next) {
  const charts = await import("./chart.js");
  if (trained !== next || training) return;
  chart?.destroy();
  chart = await charts.createChart(chartBox, {classification: next.metrics.task !== "regression"});
  for (const row of next.metrics.epochs) chart.add(row);
  const final = next.metrics.final || {};
  if (final.best_epoch) chart.setBest(final.best_epoch);
  chart.flush();
  progress.textContent = `Last run: ${next.metrics.epochs.length} epochs` +
    (final.best_epoch ? `, best weights from epoch ${final.best_epoch}` : "") + ".";
  panel.dataset.state = "restored";
}

fillForm();
refreshShape();

// Kept in this browser: the dataset and the model come back after a reload (js/persist.js).
const savedNote = $("workbench-saved");
const startOver = $("start-over");
const clock = new Intl.DateTimeFormat("en-US", {timeStyle: "short"});
const kept = (text) => { savedNote.textContent = text; startOver.hidden = !state.dataset && !state.model; };
watch({onSaved: (at) => kept(`Saved in this browser at ${clock.format(at)}.`), onProblem: kept});
restore().then(({dataset, model}) => {
  if (dataset || model) kept(`Restored your ${model ? "dataset and trained model" : "dataset"} from this browser.`);
}).catch((err) => kept(`Your last session could not be restored: ${err.message}`));
// Start over: the workbench empties and this browser forgets it (the builder keeps its settings).
startOver.addEventListener("click", async () => {
  if (training) stopper?.abort();
  state.set("model", null);
  state.set("dataset", null);
  chart?.destroy();
  chart = null;
  progress.textContent = "";
  say("");
  panel.dataset.state = "idle";
  await clear();
  kept("Started over: nothing is kept in this browser.");
  $("workbench-title").focus();
});
