// The data panel: load the XOR demo or a CSV, edit column roles and types, read the summary and
// pick the task. Every change publishes a new dataset object: state.set("dataset", dataset).
import {el} from "./dom.js";
import {state} from "./state.js";
import {inferColumns, inferTask, parseCsv, summarize, toCsv, validateDataset, xorDataset} from "./data.js";

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

const fmt = (n) => (Number.isInteger(n) ? String(n) : n.toPrecision(4).replace(/\.?0+$/, ""));

export function mountDataPanel(root) {
  if (root.dataset.mounted) return root;
  root.dataset.mounted = "data";
  let dataset = null, source = null, rowErrors = [], loads = 0;

  const xor = el("button", {type: "button", textContent: "Load the XOR demo"});
  const file = el("input", {type: "file", id: "data-file", accept: ".csv,.tsv,.txt,text/csv,text/plain"});
  const delimiter = el("select", {id: "data-delimiter"}, ...DELIMITERS.map(([v, t]) => el("option", {value: v, textContent: t})));
  const alert = el("p", {className: "data-alert", role: "alert"});
  const status = el("p", {className: "data-status", role: "status"});
  const task = el("select", {id: "data-task"});
  task.append(...Object.entries(TASK_NAMES).map(([v, t]) => el("option", {value: v, textContent: t})));
  const summary = el("p", {id: "data-summary"});
  const tbody = el("tbody");
  const classes = el("ul", {id: "data-classes", className: "data-classes"});
  const warnings = el("ul", {id: "data-warnings", className: "data-warnings"});
  const details = el("div", {className: "data-details", hidden: true},
    summary,
    el("div", {className: "data-field"}, el("label", {htmlFor: "data-task", textContent: "Task"}), task),
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
    alert, status, details);

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
      const range = c.min === undefined ? "" : `${fmt(c.min)} – ${fmt(c.max)}, mean ${fmt(c.mean)}`;
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

  async function load() {
    const mine = ++loads, {input, name} = source;
    alert.textContent = "";
    status.textContent = `Reading ${name}…`;
    try {
      const parsed = await parseCsv(input, {delimiter: delimiter.value});
      if (mine !== loads) return;
      const columns = inferColumns(parsed.fields, parsed.rows);
      const t = columns.find((c) => c.role === "target");
      rowErrors = parsed.errors;
      status.textContent = `Loaded ${name}.`;
      publish({name, source: "csv", columns, rows: parsed.rows, target: t ? t.name : null,
        task: t ? inferTask(parsed.rows, t.name, t.type) : "binary", file: input, delimiter: parsed.delimiter,
        // for a cloud copy: comma-separated text that parses back to the same rows
        text: parsed.delimiter === "," ? parsed.text : toCsv(parsed.fields, parsed.rows)});
    } catch (err) {
      if (mine !== loads) return;
      status.textContent = "";
      alert.textContent = `${name}: ${err.message}`;
    }
  }

  xor.addEventListener("click", () => {
    loads++;
    source = null;
    rowErrors = [];
    alert.textContent = "";
    status.textContent = "Loaded the XOR demo.";
    publish(xorDataset());
  });
  file.addEventListener("change", () => {
    if (!file.files.length) return;
    source = {input: file.files[0], name: file.files[0].name};
    load();
  });
  delimiter.addEventListener("change", () => source && load());
  task.addEventListener("change", () => change({task: task.value}));
  state.on("dataset", (d) => {
    if (d === dataset) return;
    dataset = d;
    rowErrors = [];
    render();
  });
  if (state.dataset) { dataset = state.dataset; render(); }
  return root;
}

const host = document.getElementById("data-panel");
if (host && !host.childElementCount) mountDataPanel(host);
