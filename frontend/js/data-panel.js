// The data panel: load the XOR demo or a CSV, edit column roles and types, read the summary and
// pick the task. Every change publishes a new dataset object: state.set("dataset", dataset).
import {el} from "./dom.js";
import {state} from "./state.js";
import {ENCODINGS, LARGE_ROWS, inferColumns, inferTask, mulberry32, parseCsv, summarize, toCsv, validateDataset,
  xorDataset} from "./data.js";
import {number} from "./format.js";

const TASK_NAMES = {binary: "Binary classification", multiclass: "Multiclass classification", regression: "Regression"};
const DELIMITERS = [["", "Detect"], [",", "Comma"], [";", "Semicolon"], ["\t", "Tab"], ["|", "Pipe"]];
const MAX_ROW_ERRORS = 5;

function select(label, options, value, onChange) {
  const s = el("select", {"aria-label": label});
  s.append(...options.map(([v, text]) => el("option", {value: v, textContent: text})));
  s.value = value;
  s.addEventListener("change", () => onChange(s.value));
  return s;
}

const SAMPLE = 20_000; // the sample a large file offers by default
const hex = (byte) => `0x${byte.toString(16).toUpperCase().padStart(2, "0")}`;

// The first cell with a letter outside ASCII: what a person checks to see whether the encoding is right.
function accented(fields, rows) {
  for (const f of fields) if (/[^\x00-\x7f]/.test(f)) return f;
  for (const row of rows.slice(0, 5000)) for (const f of fields) if (typeof row[f] === "string" && /[^\x00-\x7f]/.test(row[f])) return row[f];
  return null;
}

// A sample of rows: the first n, or n at random (seeded, so the same file gives the same sample), in file order.
function sampleRows(rows, mode, n) {
  if (mode === "all" || n >= rows.length) return rows;
  if (mode === "first") return rows.slice(0, n);
  const random = mulberry32(1), picked = new Uint8Array(rows.length);
  let left = n;
  for (let i = 0; i < rows.length && left; i++) if (random() * (rows.length - i) < left) { picked[i] = 1; left--; }
  return rows.filter((_, i) => picked[i]);
}

export function mountDataPanel(root) {
  if (root.dataset.mounted) return root;
  root.dataset.mounted = "data";
  let dataset = null, source = null, rowErrors = [], loads = 0, full = null; // full: the whole parsed file

  const xor = el("button", {type: "button", textContent: "Load the XOR demo"});
  const file = el("input", {type: "file", id: "data-file", accept: ".csv,.tsv,.txt,text/csv,text/plain"});
  const delimiter = el("select", {id: "data-delimiter"}, ...DELIMITERS.map(([v, t]) => el("option", {value: v, textContent: t})));
  const alert = el("p", {className: "data-alert", role: "alert"});
  const encoding = el("select", {id: "data-encoding"}, ...ENCODINGS.map(([v, t]) => el("option", {value: v, textContent: t})));
  const encodingText = el("p", {id: "data-encoding-warning"});
  const encodingBox = el("div", {className: "data-encoding warning", hidden: true}, encodingText,
    el("div", {className: "data-field"}, el("label", {htmlFor: "data-encoding", textContent: "Read the file as"}), encoding));
  const sampleMode = el("select", {id: "data-sample-mode"}, el("option", {value: "all", textContent: "all rows"}),
    el("option", {value: "first", textContent: "the first N rows"}), el("option", {value: "random", textContent: "N random rows"}));
  const sampleSize = el("input", {id: "data-sample-size", type: "number", min: "100", step: "1", inputMode: "numeric", value: String(SAMPLE)});
  const sampleText = el("p", {id: "data-sample-text", className: "hint"});
  const sampleBox = el("fieldset", {id: "data-sample", className: "data-sample", hidden: true},
    el("legend", {textContent: "A large file"}), sampleText,
    el("div", {className: "data-field"}, el("label", {htmlFor: "data-sample-mode", textContent: "Train on"}), sampleMode),
    el("div", {className: "data-field"}, el("label", {htmlFor: "data-sample-size", textContent: "N"}), sampleSize));
  const columnNotes = el("ul", {id: "data-notes", className: "data-notes"});
  const status = el("p", {className: "data-status", role: "status"});
  const task = el("select", {id: "data-task"});
  task.append(...Object.entries(TASK_NAMES).map(([v, t]) => el("option", {value: v, textContent: t})));
  const summary = el("p", {id: "data-summary"});
  const tbody = el("tbody");
  const classes = el("ul", {id: "data-classes", className: "data-classes"});
  const warnings = el("ul", {id: "data-warnings", className: "data-warnings"});
  const details = el("div", {className: "data-details", hidden: true},
    summary, sampleBox,
    el("div", {className: "data-field"}, el("label", {htmlFor: "data-task", textContent: "Task"}), task),
    columnNotes,
    el("div", {className: "data-table", tabIndex: 0, role: "region", "aria-label": "Columns"},
      el("table", {id: "data-columns"},
        el("caption", {textContent: "Columns"}),
        el("thead", {}, el("tr", {}, ...["Column", "Role", "Type", "Missing", "Distinct", "Range"].map(
          (t) => el("th", {scope: "col", textContent: t})))),
        tbody)),
    el("h4", {textContent: "Class balance", className: "data-classes-title"}), classes, warnings);

  root.replaceChildren(
    el("h3", {textContent: "Data"}),
    el("div", {className: "data-load"}, xor,
      el("div", {className: "data-field"}, el("label", {htmlFor: "data-file", textContent: "Open a CSV file"}), file),
      el("div", {className: "data-field"}, el("label", {htmlFor: "data-delimiter", textContent: "Delimiter"}), delimiter)),
    alert, status, encodingBox, details);

  function publish(next) {
    dataset = next;
    render();
    state.set("dataset", next);
  }

  function change(patch) {
    publish({...dataset, ...patch});
  }

  function setRole(name, role) {
    const columns = dataset.columns.map((c) => {
      if (c.name === name) return {...c, role};
      return role === "target" && c.role === "target" ? {...c, role: "feature"} : c;
    });
    const patch = {columns};
    if (role === "target") {
      patch.target = name;
      patch.task = inferTask(dataset.rows, name, columns.find((c) => c.name === name).type);
    } else if (name === dataset.target) {
      patch.target = null;
    }
    change(patch);
  }

  function setType(name, type) {
    const columns = dataset.columns.map((c) => (c.name === name ? {...c, type} : c));
    change(name === dataset.target ? {columns, task: inferTask(dataset.rows, name, type)} : {columns});
  }

  function render() {
    details.hidden = !dataset;
    if (!dataset) return;
    const {columns, rows, target} = dataset;
    const s = summarize(rows, columns, target, dataset.task);
    const features = columns.filter((c) => c.role === "feature").length;
    summary.textContent = `${dataset.name}: ${s.rows} rows, ${columns.length} columns (${features} feature${features === 1 ? "" : "s"})` +
      (target ? `, target ${target}.` : ", no target yet.");
    task.value = dataset.task;
    const focused = tbody.contains(document.activeElement) && document.activeElement.getAttribute("aria-label");
    tbody.replaceChildren(...s.columns.map((c) => {
      const range = c.min === undefined ? "" : `${number(c.min)} – ${number(c.max)}, mean ${number(c.mean)}`;
      return el("tr", {className: `role-${c.role}`},
        el("th", {scope: "row", textContent: c.name}),
        el("td", {}, select(`Role of ${c.name}`, [["feature", "Feature"], ["target", "Target"], ["ignore", "Ignore"]],
          c.role, (v) => setRole(c.name, v))),
        el("td", {}, select(`Type of ${c.name}`, [["numeric", "Numeric"], ["categorical", "Categorical"]],
          c.type, (v) => setType(c.name, v))),
        el("td", {className: c.missing ? "data-missing" : "", textContent: `${c.missing_pct}%`}),
        el("td", {textContent: String(c.distinct)}),
        el("td", {textContent: range}));
    }));
    columnNotes.replaceChildren(...columns.filter((c) => c.note && c.role === "ignore").map((c) =>
      el("li", {}, el("strong", {textContent: c.name}), ` — ${c.note} Set its role to Feature to use it anyway.`)));
    if (focused) [...tbody.querySelectorAll("select")].find((e) => e.getAttribute("aria-label") === focused)?.focus();
    const shown = s.classes || [];
    classes.previousElementSibling.hidden = classes.hidden = !shown.length;
    classes.replaceChildren(...shown.map((c) => el("li", {},
      el("span", {className: "data-label", textContent: String(c.label)}),
      el("meter", {min: 0, max: 100, value: c.pct, "aria-hidden": "true"}),
      ` ${c.count} row${c.count === 1 ? "" : "s"} (${c.pct}%)`)));
    const problems = validateDataset(dataset);
    const notes = [...new Set([...problems, ...s.warnings])];
    const errs = rowErrors.slice(0, MAX_ROW_ERRORS).map((e) => e.message);
    if (rowErrors.length > MAX_ROW_ERRORS) errs.push(`…and ${rowErrors.length - MAX_ROW_ERRORS} more rows with problems.`);
    warnings.replaceChildren(...[...notes, ...errs].map((t) => el("li", {textContent: t,
      className: problems.includes(t) ? "problem" : ""})));
  }

  function showEncoding(name, parsed) {
    const fell = Boolean(parsed.fallback);
    if (!fell && parsed.encoding === "utf-8") { encodingBox.hidden = true; encoding.value = "utf-8"; return; }
    encodingBox.hidden = false;
    encoding.value = parsed.encoding;
    encodingBox.dataset.encoding = parsed.encoding;
    const sample = accented(parsed.fields, parsed.rows);
    const label = ENCODINGS.find(([v]) => v === parsed.encoding)?.[1] || parsed.encoding;
    encodingText.textContent = (fell ? `${name} is not UTF-8 text (byte ${hex(parsed.fallback.byte)} at position ` +
      `${number(parsed.fallback.offset)} is not valid UTF-8), so it was read as ${label}. ` : `${name} was read as ${label}. `) +
      (sample ? `Check that accented letters look right, for example “${sample.slice(0, 40)}”; if not, choose another encoding.`
        : "If letters look wrong, choose another encoding.");
  }

  function sampled() {
    const n = Math.max(100, Math.floor(Number(sampleSize.value)) || SAMPLE);
    return sampleRows(full.rows, sampleMode.value, n);
  }

  function publishParsed(name, parsed, input) {
    const rows = full.rows.length >= LARGE_ROWS ? sampled() : full.rows;
    const columns = inferColumns(parsed.fields, rows);
    const t = columns.find((c) => c.role === "target");
    const whole = rows === full.rows;
    sampleBox.hidden = full.rows.length < LARGE_ROWS;
    sampleText.textContent = `${name} has ${number(full.rows.length)} rows. Training on all of them takes longer; ` +
      "a sample trains faster (the estimated time shows under Training).";
    publish({name, source: "csv", columns, rows, target: t ? t.name : null,
      task: t ? inferTask(rows, t.name, t.type) : "binary", file: input, delimiter: parsed.delimiter, encoding: parsed.encoding,
      ...(whole ? {} : {sample: {mode: sampleMode.value, rows: rows.length, of: full.rows.length}}),
      // for a cloud copy: comma-separated UTF-8 text that parses back to the same rows
      text: whole && parsed.delimiter === "," && parsed.encoding === "utf-8" ? parsed.text : toCsv(parsed.fields, rows)});
  }

  async function load(chosenEncoding = "auto") {
    const mine = ++loads, {input, name} = source;
    alert.textContent = "";
    status.textContent = `Reading ${name}…`;
    try {
      const parsed = await parseCsv(input, {delimiter: delimiter.value, encoding: chosenEncoding});
      if (mine !== loads) return;
      rowErrors = parsed.errors;
      full = {rows: parsed.rows, parsed, name, input};
      status.textContent = `Loaded ${name}.`;
      showEncoding(name, parsed);
      publishParsed(name, parsed, input);
    } catch (err) {
      if (mine !== loads) return;
      status.textContent = "";
      encodingBox.hidden = true;
      alert.textContent = `${name}: ${err.message}`;
    }
  }

  const resample = () => {
    sampleSize.disabled = sampleMode.value === "all";
    if (full) publishParsed(full.name, full.parsed, full.input);
  };
  sampleMode.addEventListener("change", resample);
  sampleSize.addEventListener("change", resample);
  encoding.addEventListener("change", () => source && load(encoding.value));

  xor.addEventListener("click", () => {
    loads++;
    source = null;
    full = null;
    encodingBox.hidden = sampleBox.hidden = true;
    rowErrors = [];
    alert.textContent = "";
    status.textContent = "Loaded the XOR demo.";
    publish(xorDataset());
  });
  file.addEventListener("change", () => {
    if (!file.files.length) return;
    source = {input: file.files[0], name: file.files[0].name};
    sampleMode.value = "all";
    sampleSize.disabled = true;
    load();
  });
  delimiter.addEventListener("change", () => source && load(encodingBox.hidden ? "auto" : encoding.value));
  task.addEventListener("change", () => change({task: task.value}));
  state.on("dataset", (d) => {
    if (d === dataset) return;
    dataset = d;
    rowErrors = [];
    full = null; // another panel's dataset (the library's): no file of ours behind it
    encodingBox.hidden = sampleBox.hidden = true;
    render();
  });
  if (state.dataset) { dataset = state.dataset; render(); }
  return root;
}

const host = document.getElementById("data-panel");
if (host && !host.childElementCount) mountDataPanel(host);
