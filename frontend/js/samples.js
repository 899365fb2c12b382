// The sample gallery: real, openly licensed tables bundled with the lab (frontend/samples/, sources and
// licences in its README.md). One click loads a sample into the workbench with its column roles, sets
// a model that suits it and trains it: a guided first run that needs no account.
import {$, showMessage} from "./dom.js";
import {state} from "./state.js";
import {applyDraft, trainNow} from "./workbench.js";

// What each sample predicts and the model a first run gets (Adam at 0.01, early stopping on).
const FIRST_RUN = {optimizer: "adam", learning_rate: 0.01, batch_size: 16, seed: 1, patience: 30};
export const SAMPLES = {
  iris: {file: "iris.csv", name: "Iris flowers", target: "species", task: "multiclass",
    model: {...FIRST_RUN, layers: [{units: 16, activation: "relu"}], epochs: 150}},
  penguins: {file: "penguins.csv", name: "Palmer penguins", target: "species", task: "multiclass", ignore: ["year"],
    model: {...FIRST_RUN, layers: [{units: 16, activation: "relu"}], epochs: 150}},
  "penguin-mass": {file: "penguins.csv", name: "Penguin body mass", target: "body_mass_g", task: "regression",
    ignore: ["year"], model: {...FIRST_RUN, layers: [{units: 32, activation: "relu"}, {units: 16, activation: "relu"}],
      learning_rate: 0.01, epochs: 300}},
};

const say = (text, problem = false) => showMessage($("samples-message"), text, problem);

/** Loads sample `key` into the workbench (no training): -> the dataset published. */
export async function loadSample(key) {
  const sample = SAMPLES[key];
  const res = await fetch(`/samples/${sample.file}`);
  if (!res.ok) throw new Error(`the file could not be downloaded (HTTP ${res.status})`);
  const text = await res.text();
  const data = await import("./data.js");
  const parsed = await data.parseCsv(text, {delimiter: ","});
  const columns = data.inferColumns(parsed.fields, parsed.rows).map((c) => ({...c,
    role: c.name === sample.target ? "target" : sample.ignore?.includes(c.name) ? "ignore" : "feature",
    type: c.name === sample.target && sample.task !== "regression" ? "categorical" : c.type}));
  const dataset = {name: sample.file, source: "csv", columns, rows: parsed.rows, target: sample.target,
    task: sample.task, delimiter: ",", text: parsed.text};
  state.set("dataset", dataset);
  applyDraft({task: "auto", ...sample.model});
  return dataset;
}

async function guidedRun(key, button) {
  const sample = SAMPLES[key];
  button.disabled = true;
  say(`Loading ${sample.name}…`);
  try {
    const dataset = await loadSample(key);
    say(`${sample.name}: ${dataset.rows.length} rows loaded into the workbench below, predicting ${sample.target}. ` +
      "Training starts now: watch the curves, then try a prediction.");
    $("train-panel").scrollIntoView({block: "start"});
    await new Promise((r) => setTimeout(r)); // the builder's shape follows the dataset first
    await trainNow();
  } catch (err) {
    say(`${sample.name} could not be loaded: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

// "Use your own CSV" on the first screen: to the Data panel, with the file picker focused.
document.querySelector('.hero-actions a[href="#data-panel"]')?.addEventListener("click", (event) => {
  const picker = document.getElementById("data-file");
  if (!picker) return;
  event.preventDefault();
  $("data-panel").scrollIntoView({block: "start"});
  picker.focus({preventScroll: true});
});

for (const card of document.querySelectorAll("#samples [data-sample]")) {
  const button = card.querySelector("button");
  button.addEventListener("click", () => guidedRun(card.dataset.sample, button));
}
