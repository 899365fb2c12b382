// The training panel's results: the final metrics in the target's own units, per-class precision,
// recall and F1, hints in plain words from the curves, and the prediction form. Training itself runs
// in a worker (js/trainer.js, js/fit.js), so the page stays responsive. Loaded on demand by workbench.js.
import {normalizeCell} from "./data.js";
import {el, showMessage} from "./dom.js";
import {featuresOf} from "./fit.js";
import {NONE, metric, number, percent} from "./format.js";
import {diagnose} from "./metrics.js";
import {Cancelled, predict as predictInWorker, train} from "./trainer.js";

export {Cancelled, train};

/**
 * Predict one raw row ({feature: value}, strings from a form are fine) with a trained or loaded model
 * (a handle) -> {output: number[], label?, probabilities?: [{label, p}], value?}.
 */
export const predict = (handle, preprocessor, row) => predictInWorker(handle, preprocessor, row);

// --- results: the metrics tables, the hints, the confusion matrix and the prediction form ----------

const scroll = (table) => el("div", {className: "scroll"}, table); // wide tables scroll, not the page

function table(id, caption, head, rows) {
  return el("table", {id, className: "results"}, el("caption", {textContent: caption}),
    el("thead", {}, el("tr", {}, ...head.map((t) => el("th", {scope: "col", textContent: t})))),
    el("tbody", {}, ...rows.map(([name, ...cells]) => el("tr", {}, el("th", {scope: "row", textContent: name}),
      ...cells.map((c) => el("td", {textContent: c}))))));
}

/** The final metrics: loss, and RMSE/MAE/R² in the target's units (regression) or accuracy and ROC AUC. */
export function metricsTable(metrics, target) {
  const {final} = metrics;
  const rows = [];
  const pair = (name, key) => rows.push([name, metric(key, final[key]), metric(`val_${key}`, final[`val_${key}`])]);
  if (metrics.task === "regression") {
    const units = target ? ` (${target} units)` : "";
    pair(`RMSE${units}`, "rmse");
    pair(`MAE${units}`, "mae");
    pair("R²", "r2");
    pair("Loss (MSE of the scaled target)", "loss");
  } else {
    pair("Accuracy", "acc");
    if (metrics.task === "binary") pair("ROC AUC", "auc");
    pair("Loss (cross-entropy)", "loss");
  }
  const t = table("metrics-table", `Final metrics (weights of epoch ${final.best_epoch ?? NONE}, ${metrics.backend})`,
    ["Metric", "Training", "Validation"], rows);
  t.dataset.final = JSON.stringify(final);
  t.dataset.task = metrics.task;
  return t;
}

/** Precision, recall and F1 of each class on the validation rows. */
function perClassTable(perClass) {
  const t = table("per-class", "Per class, on the validation rows", ["Class", "Precision", "Recall", "F1", "Rows"],
    perClass.map((c) => [c.label, percent(c.precision), percent(c.recall), percent(c.f1), number(c.support)]));
  t.dataset.perClass = JSON.stringify(perClass);
  return t;
}

export function confusionTable(matrix, labels) {
  const t = el("table", {id: "confusion-matrix", className: "results confusion"},
    el("caption", {textContent: "Confusion matrix on the validation rows (rows: actual, columns: predicted)"}),
    el("thead", {}, el("tr", {}, el("td"), ...labels.map((l) => el("th", {scope: "col", textContent: `predicted ${l}`})))),
    el("tbody", {}, ...matrix.map((row, i) => el("tr", {}, el("th", {scope: "row", textContent: `actual ${labels[i]}`}),
      ...row.map((n, j) => el("td", {textContent: number(n), className: i === j ? "hit" : n ? "miss" : ""}))))));
  t.dataset.matrix = JSON.stringify(matrix);
  return t;
}

/** Hints in plain words when the curves show overfitting or a learning rate that is too high. */
function hintsList(metrics, heldOut = true) {
  const hints = diagnose(metrics.epochs, {learningRate: metrics.params?.learning_rate, heldOut});
  if (!hints.length) return null;
  return el("ul", {id: "train-hints", className: "hints"}, ...hints.map((h) => {
    const item = el("li", {textContent: h.text});
    item.dataset.kind = h.kind;
    return item;
  }));
}

// A form value as a number, null when blank, or undefined when it is not a number.
function numberOrBlank(raw) {
  const v = normalizeCell(raw);
  if (v === null) return null;
  return typeof v === "number" ? v : undefined;
}

function numberField(f, i) {
  const control = el("input", {id: `predict-${i}`, name: f.name, type: "text", inputMode: "decimal", autocomplete: "off",
    placeholder: "a number; blank: the training mean"});
  const error = el("small", {id: `predict-${i}-error`, className: "field-error", hidden: true});
  control.setAttribute("aria-describedby", error.id);
  const check = () => {
    const bad = numberOrBlank(control.value) === undefined;
    if (bad) control.setAttribute("aria-invalid", "true"); else control.removeAttribute("aria-invalid");
    error.hidden = !bad;
    error.textContent = bad ? `“${control.value.trim()}” is not a number: enter digits such as 3.5 or -2, or leave it blank.` : "";
    return !bad;
  };
  // Checked when Predict is pressed (a message appearing on blur would move the button under the
  // pointer), and again while the person fixes the field.
  control.addEventListener("input", () => { if (control.hasAttribute("aria-invalid")) check(); });
  return {control, error, check};
}

function predictForm(trained) {
  const pre = trained.preprocessor;
  const fields = featuresOf(pre).map((f, i) => {
    if (f.type !== "categorical") return numberField(f, i);
    const control = el("select", {id: `predict-${i}`, name: f.name}, ...f.values.map((v) => el("option", {value: v, textContent: v})),
      el("option", {value: "", textContent: "(missing)"}));
    return {control, error: null, check: () => true};
  });
  const boxes = fields.map(({control, error}) => el("div", {className: "field"},
    el("label", {htmlFor: control.id, textContent: control.name}), control, error));
  const output = el("output", {id: "prediction"});
  output.setAttribute("aria-live", "polite");
  const form = el("form", {id: "predict-form", noValidate: true},
    el("fieldset", {}, el("legend", {textContent: `Predict ${pre.target}`}), el("div", {className: "grid"}, ...boxes),
      el("button", {type: "submit", textContent: "Predict"})), output);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const bad = fields.filter((f) => !f.check());
    if (bad.length) {
      output.classList.add("problem");
      delete output.dataset.output;
      output.replaceChildren(`Fix ${bad.length === 1 ? "the field" : `${bad.length} fields`} marked above: numbers only.`);
      bad[0].control.focus();
      return;
    }
    const row = Object.fromEntries(fields.map(({control}) => [control.name, control.value]));
    try {
      const result = await predict(trained.model, pre, row);
      output.classList.remove("problem");
      output.dataset.output = JSON.stringify(result.output);
      if ("value" in result) {
        output.dataset.value = String(result.value);
        output.replaceChildren(el("strong", {textContent: `Prediction: ${number(result.value)}`}));
      } else {
        output.dataset.label = String(result.label);
        output.replaceChildren(el("strong", {textContent: `Prediction: ${result.label}`}),
          el("ul", {className: "probabilities"}, ...result.probabilities.map(({label, p}) =>
            el("li", {textContent: `${label}: ${percent(p)}`}))));
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

/** Show a trained or loaded model ({model, spec, preprocessor, metrics, heldOut?, source}) in `container`. */
export function renderResults(container, trained) {
  const parts = [];
  if (trained.metrics) {
    const {metrics} = trained;
    parts.push(hintsList(metrics, trained.heldOut ?? metrics.params?.validation > 0));
    parts.push(scroll(metricsTable(metrics, trained.preprocessor?.target ?? metrics.params?.target)));
    if (metrics.final.per_class) parts.push(scroll(perClassTable(metrics.final.per_class)));
    const matrix = metrics.final.confusion_matrix;
    if (matrix && trained.preprocessor) parts.push(scroll(confusionTable(matrix, trained.preprocessor.target_encoding.labels)));
  } else {
    parts.push(el("p", {className: "hint", textContent: `Model from ${trained.source || "elsewhere"}; it has no training metrics here.`}));
  }
  if (trained.preprocessor) parts.push(predictForm(trained), batchForm(trained));
  container.replaceChildren(...parts.filter(Boolean));
}
