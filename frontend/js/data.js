// The lab's data side: the XOR demo, CSV parsing (Papa Parse, loaded on first use), column and task
// inference, a summary, a seeded stratified split and a preprocessor fitted on the training rows
// only. Pure functions over plain objects (no TF.js); the one piece of DOM is loading Papa Parse.
//
// Dataset = {name, source: "xor"|"csv", columns: [{name, role, type}], rows: [{col: value}],
//            target, task: "binary"|"multiclass"|"regression", file?, text?, delimiter?, validation?}
// Cells are numbers, booleans, strings (trimmed) or null (missing).

export const TASKS = ["binary", "multiclass", "regression"];
const MAX_COLUMNS = 200;
const MAX_CLASSES = 50;
const WORKER_BYTES = 5 * 1024 * 1024; // larger files parse in Papa's worker (CSP: worker-src blob:)
export const VALIDATION = 0.2; // the share of rows held out when the dataset does not say
export const LARGE_ROWS = 20_000; // from this many rows the lab offers a sample and estimates the time first
export const MISSING = "__missing__";
export const UNSEEN = "__unseen__";

export function xorDataset() {
  return {
    name: "XOR", source: "xor",
    columns: [{name: "x1", role: "feature", type: "numeric"}, {name: "x2", role: "feature", type: "numeric"},
      {name: "y", role: "target", type: "numeric"}],
    rows: [{x1: 0, x2: 0, y: 0}, {x1: 0, x2: 1, y: 1}, {x1: 1, x2: 0, y: 1}, {x1: 1, x2: 1, y: 0}],
    target: "y", task: "binary",
    validation: 0, // four rows: train on all of them (a hint for the workbench)
  };
}

// --- cells -------------------------------------------------------------------------------------

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const NA = new Set(["", "na", "n/a", "nan", "-nan", "#n/a", "<na>", "null", "none", "?"]);

// One raw cell (a CSV string or a prediction-form input) as the lab stores it: trimmed, missing
// markers -> null, numbers (within the safe integer range, like Papa's dynamicTyping) and
// true/false converted. Dates and everything else stay strings.
export function normalizeCell(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value !== "string") return value;
  const s = value.trim();
  if (NA.has(s.toLowerCase())) return null;
  if (NUMBER.test(s)) {
    const n = Number(s);
    if (Number.isFinite(n) && Math.abs(n) <= Number.MAX_SAFE_INTEGER) return n;
  }
  const lower = s.toLowerCase();
  if (lower === "true" || lower === "false") return lower === "true";
  return s;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const key = (v) => (v === null || v === undefined ? MISSING : String(v));

// Labels sort numbers numerically, then everything else by its string (code points, not locale).
function compareValues(a, b) {
  const na = typeof a === "number", nb = typeof b === "number";
  if (na && nb) return a - b;
  if (na !== nb) return na ? -1 : 1;
  const sa = String(a), sb = String(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

// --- CSV ---------------------------------------------------------------------------------------

let papa = null;
function loadPapa() {
  if (globalThis.Papa) return Promise.resolve(globalThis.Papa);
  papa ||= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = new URL("../vendor/papaparse.min.js", import.meta.url).href;
    script.onload = () => resolve(globalThis.Papa);
    script.onerror = () => { papa = null; script.remove(); reject(new Error("The CSV parser could not be loaded.")); };
    document.head.append(script);
  });
  return papa;
}

function papaParse(Papa, input, delimiter, big) {
  return new Promise((resolve, reject) => {
    Papa.parse(input, {
      header: false, dynamicTyping: false, skipEmptyLines: "greedy", delimiter: delimiter || "",
      worker: big && Papa.WORKERS_SUPPORTED,
      complete: resolve,
      error: (err) => reject(new Error(`The file could not be read: ${err?.message || err}`)),
    });
  });
}

// --- bytes to text: binary files refused, UTF-8 strictly, else an 8-bit encoding the person can change ---

export const ENCODINGS = [["utf-8", "UTF-8"], ["windows-1252", "Windows-1252 / Latin-1 (Western European)"],
  ["iso-8859-15", "ISO-8859-15 (Western European with €)"], ["iso-8859-2", "ISO-8859-2 (Central European)"],
  ["windows-1251", "Windows-1251 (Cyrillic)"]];
const FALLBACK_ENCODING = "windows-1252"; // what browsers decode "Latin-1" as (WHATWG Encoding)
const SNIFF_BYTES = 64 * 1024;
const MAGIC = [["%PDF", "a PDF document"], ["PK\x03\x04", "a ZIP archive (or an Excel .xlsx file)"],
  ["\x89PNG", "a PNG image"], ["\xff\xd8\xff", "a JPEG image"], ["GIF8", "a GIF image"], ["\x1f\x8b", "a gzip archive"],
  ["\xd0\xcf\x11\xe0", "an old Excel or Word file"], ["SQLite format", "an SQLite database"], ["\x7fELF", "a program"]];

/** Why these bytes are not a text file (a sentence), or null when they look like text. */
function binaryProblem(bytes) {
  const head = bytes.subarray(0, SNIFF_BYTES);
  const start = String.fromCharCode(...head.subarray(0, 16));
  const known = MAGIC.find(([magic]) => start.startsWith(magic));
  if (known) return `it is ${known[1]}, not a text file`;
  if ((head[0] === 0xff && head[1] === 0xfe) || (head[0] === 0xfe && head[1] === 0xff)) return null; // UTF-16 with a BOM
  let control = 0;
  for (const b of head) {
    if (b === 0) return "it contains NUL bytes: it is a binary file, not text";
    if (b < 32 && b !== 9 && b !== 10 && b !== 13 && b !== 12) control++;
  }
  return head.length && control > 0.05 * head.length ? "it is mostly control characters: a binary file, not text" : null;
}

/** Text error from the strict UTF-8 decoder: where the first invalid byte is. */
function firstInvalidUtf8(bytes) {
  // The longest prefix that decodes (a multi-byte character cut at its end is fine when streaming).
  const decodes = (end) => {
    try { new TextDecoder("utf-8", {fatal: true}).decode(bytes.subarray(0, end), {stream: true}); return true; } catch { return false; }
  };
  let lo = 0, hi = bytes.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (decodes(mid)) lo = mid; else hi = mid;
  }
  // bytes[lo] broke a sequence: the culprit is the lead byte that started it, if one is pending.
  let at = lo - 1;
  while (at > 0 && (bytes[at] & 0xc0) === 0x80) at--;
  return at >= 0 && bytes[at] >= 0xc0 ? at : lo;
}

/**
 * The text of a file's bytes: {text, encoding, fallback?: {offset, byte}}. "auto" decodes strictly as
 * UTF-8 (a BOM is dropped) and, when that fails, as Windows-1252 with `fallback` saying where UTF-8 broke.
 * Throws for a binary file.
 */
function decodeBytes(bytes, encoding = "auto") {
  const problem = binaryProblem(bytes);
  if (problem) throw new Error(`This file cannot be used: ${problem}. Choose a CSV file (comma-separated text).`);
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return {text: new TextDecoder("utf-16le").decode(bytes), encoding: "utf-16le"};
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return {text: new TextDecoder("utf-16be").decode(bytes), encoding: "utf-16be"};
  if (encoding === "auto" || encoding === "utf-8") {
    try {
      return {text: new TextDecoder("utf-8", {fatal: true}).decode(bytes), encoding: "utf-8"};
    } catch {
      if (encoding === "utf-8") throw new Error("The file is not valid UTF-8; choose the encoding it was saved in.");
      const offset = firstInvalidUtf8(bytes);
      return {text: new TextDecoder(FALLBACK_ENCODING).decode(bytes), encoding: FALLBACK_ENCODING,
        fallback: {offset, byte: bytes[offset]}};
    }
  }
  return {text: new TextDecoder(encoding).decode(bytes), encoding};
}

// parseCsv(File | string, {delimiter, encoding}) -> {fields, rows, errors: [{row, message}], delimiter,
// text, encoding, fallback?}. Rows are keyed by the header; `row` numbers count data rows from 1; text is
// the file's text; encoding: "auto" (UTF-8, else Windows-1252 with `fallback` set) or a TextDecoder label.
// Throws an Error with a message for the user when the file cannot make a dataset.
export async function parseCsv(input, {delimiter, encoding = "auto"} = {}) {
  if (typeof input !== "string" && !(input && typeof input.size === "number")) throw new Error("Choose a CSV file.");
  if (typeof input === "string" ? !input.trim() : input.size === 0) throw new Error("The file is empty.");
  const Papa = await loadPapa();
  const decoded = typeof input === "string" ? {text: input, encoding: "utf-16"}
    : decodeBytes(new Uint8Array(await input.arrayBuffer()), encoding);
  const text = decoded.text;
  if (!text.trim()) throw new Error("The file is empty.");
  // Papa parses large texts in its own worker (CSP: worker-src blob:), keeping the page responsive.
  const result = await papaParse(Papa, text, delimiter, text.length > WORKER_BYTES);
  const data = result.data;
  if (!data.length) throw new Error("The file is empty.");
  const fields = data[0].map((h) => String(h ?? "").trim());
  if (fields.length > MAX_COLUMNS) {
    throw new Error(`The file has ${fields.length} columns; the lab takes at most ${MAX_COLUMNS}.`);
  }
  if (fields.includes("__proto__")) throw new Error("A column cannot be named __proto__.");
  const blank = fields.findIndex((f) => !f);
  if (blank >= 0) throw new Error(`Column ${blank + 1} has no name: every column needs a name in the header row.`);
  const seen = new Set(), dup = new Set();
  for (const f of fields) (seen.has(f) ? dup : seen).add(f);
  if (dup.size) throw new Error(`The header repeats column names: ${[...dup].join(", ")}. Column names must be unique.`);
  if (data.length < 2) throw new Error("The file has a header row but no data rows.");

  const errors = [];
  for (const e of result.errors) {
    if (e.code === "UndetectableDelimiter") continue; // one column: Papa falls back to a comma
    const row = typeof e.row === "number" ? e.row : 0; // data[0] is the header: data rows count from 1
    errors.push({row, message: row ? `Row ${row}: ${e.message}.` : `${e.message}.`});
  }
  const n = fields.length, rows = new Array(data.length - 1);
  for (let r = 1; r < data.length; r++) {
    const cells = data[r], row = {};
    if (cells.length !== n) {
      errors.push({row: r, message: `Row ${r} has ${cells.length} fields, the header has ${n}` +
        (cells.length < n ? "; the missing cells are left empty." : "; the extra cells are ignored.")});
    }
    for (let c = 0; c < n; c++) row[fields[c]] = normalizeCell(cells[c]);
    rows[r - 1] = row;
  }
  return {fields, rows, errors, delimiter: result.meta.delimiter, text, encoding: decoded.encoding,
    ...(decoded.fallback ? {fallback: decoded.fallback} : {})};
}

// RFC 4180 text (CRLF) of the rows, for uploading a dataset: null -> an empty cell.
export function toCsv(fields, rows) {
  const cell = (v) => {
    if (v === null || v === undefined) return "";
    const s = String(v);
    return /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  const lines = [fields.map(cell).join(",")];
  for (const row of rows) lines.push(fields.map((f) => cell(row[f])).join(","));
  return lines.join("\r\n") + "\r\n";
}

// --- inference ---------------------------------------------------------------------------------

function columnStats(rows, name) {
  let present = 0, numeric = 0, integers = 0, min = Infinity, max = -Infinity;
  const distinct = new Set();
  for (const row of rows) {
    const v = row[name];
    if (v === null || v === undefined) continue;
    present++;
    distinct.add(isNum(v) ? v : key(v));
    if (isNum(v)) {
      numeric++;
      if (Number.isInteger(v)) integers++;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  return {present, numeric, integers, min, max, distinct: distinct.size};
}

// Column names that say "this is what to predict", and ones that say "this identifies a row".
// (Only names that are rarely anything but the target: "income" or "quality" is as often a feature.)
const LABEL_NAME = /^(target|label|labels|class|y|outcome|survived|survival|price|saleprice|sale_price|species|diagnosis|churn|churned|medv|is_?fraud|fraud|spam)$/i;
const ID_NAME = /^(id|uuid|guid|key|index|name|full_?name|ticket|row|row_?id|record)$|[_ .-]id$|^id[_ .-]/i;
const CAMEL_ID = /[a-z]Id$/; // PassengerId, customerId (case matters: "paid" is no identifier)
const MAX_TEXT_CATEGORIES = 50; // text columns with more distinct values than this (and many per row) are left out
const LOW_CARDINALITY = 10;

// Why a column is left out by default, or null: empty, identifier-like (a value per row, or an ID name),
// or text with too many distinct values to one-hot encode usefully.
function ignoreReason(name, s, n, type) {
  if (s.present === 0) return "it is empty";
  const unique = n >= 3 && s.present === n && s.distinct === n;
  const counter = s.numeric === n && s.integers === n && (s.min === 0 || s.min === 1) && s.max - s.min === n - 1;
  if (unique && (s.numeric === 0 || counter)) return "it has a different value in every row, like an identifier";
  if ((ID_NAME.test(name) || CAMEL_ID.test(name)) && s.distinct > 0.5 * s.present) {
    return `its name looks like an identifier and ${s.distinct.toLocaleString("en-US")} of its ${s.present.toLocaleString("en-US")} values differ`;
  }
  if (type === "categorical" && s.distinct > MAX_TEXT_CATEGORIES && s.distinct > 0.2 * s.present) {
    return `it is text with ${s.distinct.toLocaleString("en-US")} different values in ${s.present.toLocaleString("en-US")} rows: ` +
      `one input per value would add ${s.distinct.toLocaleString("en-US")} inputs that barely repeat`;
  }
  return null;
}

// numeric when >= 95% of the non-empty cells are finite numbers. Identifier-like, high-cardinality text
// and empty columns default to "ignore" with a `note` saying why. The target is a column named like one
// (target, label, class, y, price, species...), else the last low-cardinality one (2 to 10 values), else
// the last column left.
export function inferColumns(fields, rows) {
  const n = rows.length;
  const stats = new Map();
  const columns = fields.map((name) => {
    const s = columnStats(rows, name);
    stats.set(name, s);
    const type = s.present > 0 && s.numeric >= 0.95 * s.present ? "numeric" : "categorical";
    const why = ignoreReason(name, s, n, type);
    return why ? {name, role: "ignore", type, note: `Ignored: ${why}.`} : {name, role: "feature", type};
  });
  const open = columns.filter((c) => c.role !== "ignore");
  const target = open.find((c) => LABEL_NAME.test(c.name.trim()))
    || [...open].reverse().find((c) => { const d = stats.get(c.name).distinct; return d >= 2 && d <= LOW_CARDINALITY; })
    || open[open.length - 1];
  if (target) {
    target.role = "target";
  } else if (columns.length) { // every column looked ignorable: the last one is still the best guess
    const last = columns[columns.length - 1];
    delete last.note;
    last.role = "target";
  }
  return columns;
}

// categorical (or at most two numbers): binary for 2 classes, multiclass for 3..50; numeric:
// regression, except integer labels 0..k-1 with 3 <= k <= 10, which are taken as encoded classes.
export function inferTask(rows, target, type) {
  const values = new Set();
  let allInts = true;
  for (const row of rows) {
    const v = row[target];
    if (v === null || v === undefined) continue;
    if (type === "numeric" && !isNum(v)) continue;
    values.add(type === "numeric" ? v : key(v));
    if (!(isNum(v) && Number.isInteger(v))) allInts = false;
    if (values.size > 1000) break;
  }
  const k = values.size;
  if (type !== "numeric") return k > 2 ? "multiclass" : "binary";
  if (k <= 2) return "binary";
  if (allInts && k <= 10 && [...values].every((v) => v >= 0 && v < k)) return "multiclass";
  return "regression";
}

// --- summary -----------------------------------------------------------------------------------

const pct = (part, whole) => (whole ? Math.round((1000 * part) / whole) / 10 : 0);

function classCounts(rows, target) {
  const counts = new Map();
  for (const row of rows) {
    const v = row[target];
    if (v === null || v === undefined) continue;
    const k = key(v);
    const c = counts.get(k);
    if (c) c.count++; else counts.set(k, {label: v, count: 1});
  }
  return [...counts.values()].sort((a, b) => compareValues(a.label, b.label));
}

// Rows in blocks of the target (classification), or monotonic in it (regression).
function sortedByTarget(rows, target, classification) {
  const values = [];
  for (const row of rows) if (row[target] !== null && row[target] !== undefined) values.push(row[target]);
  if (values.length < 4) return false;
  if (classification) {
    let changes = 0;
    const seen = new Set([key(values[0])]);
    for (let i = 1; i < values.length; i++) {
      if (key(values[i]) !== key(values[i - 1])) { changes++; seen.add(key(values[i])); }
    }
    return seen.size > 1 && changes === seen.size - 1 && values.length >= 2 * seen.size;
  }
  if (!values.every(isNum)) return false;
  let up = true, down = true;
  for (let i = 1; i < values.length; i++) {
    if (values[i] < values[i - 1]) up = false;
    if (values[i] > values[i - 1]) down = false;
  }
  return (up || down) && !(up && down);
}

// summarize(rows, columns, target, task?) -> {rows, columns: [...], classes?, sorted_by_target, warnings}
export function summarize(rows, columns, target, task) {
  const n = rows.length, warnings = [];
  const out = columns.map((col) => {
    let missing = 0, nonNumeric = 0, sum = 0, count = 0, min = Infinity, max = -Infinity;
    const distinct = new Set();
    for (const row of rows) {
      const v = row[col.name];
      if (v === null || v === undefined) { missing++; continue; }
      if (col.type === "numeric") {
        if (!isNum(v)) { nonNumeric++; missing++; continue; }
        sum += v; count++;
        if (v < min) min = v;
        if (v > max) max = v;
        distinct.add(v);
      } else {
        distinct.add(key(v));
      }
    }
    const s = {name: col.name, type: col.type, role: col.role, missing, missing_pct: pct(missing, n), distinct: distinct.size};
    if (col.type === "numeric" && count) Object.assign(s, {min, max, mean: sum / count});
    if (nonNumeric) warnings.push(`${col.name}: ${nonNumeric} non-numeric value${nonNumeric > 1 ? "s are" : " is"} treated as missing.`);
    if (col.role === "feature") {
      if (missing === n) warnings.push(`${col.name} is empty; it carries no information.`);
      else if (distinct.size === 1 && missing === 0) warnings.push(`${col.name} has a single value; it carries no information.`);
      if (col.type === "categorical" && distinct.size > MAX_CLASSES) {
        warnings.push(`${col.name} has ${distinct.size} categories; consider ignoring it or making it numeric.`);
      }
    }
    return s;
  });
  const summary = {rows: n, columns: out, sorted_by_target: false, warnings};
  const tcol = columns.find((c) => c.name === target);
  if (!n) warnings.push("The dataset has no rows.");
  if (!tcol) { warnings.push("Choose a target column."); return summary; }
  if (!columns.some((c) => c.role === "feature")) warnings.push("Choose at least one feature column.");
  task ||= inferTask(rows, target, tcol.type);
  const classification = task !== "regression";
  const t = out.find((c) => c.name === target);
  if (t.missing) {
    const many = t.missing > 1;
    warnings.push(`${t.missing} row${many ? "s have" : " has"} no target value; training leaves ${many ? "them" : "it"} out.`);
  }
  if (classification) {
    const counts = classCounts(rows, target), labelled = n - t.missing;
    summary.classes = counts.map((c) => ({label: c.label, count: c.count, pct: pct(c.count, labelled)}));
    if (counts.length < 2) {
      warnings.push(`The target ${target} has ${counts.length ? "a single class" : "no values"}; classification needs at least two.`);
    }
    if (counts.length > MAX_CLASSES) warnings.push(`${target} has ${counts.length} classes; is this a regression target?`);
    const rare = counts.filter((c) => c.count < 2).length;
    if (rare) {
      const many = rare > 1;
      warnings.push(`${rare} class${many ? "es have" : " has"} a single row; the validation split cannot include ${many ? "them" : "it"}.`);
    }
    const small = Math.min(...counts.map((c) => c.count)), large = Math.max(...counts.map((c) => c.count));
    if (counts.length >= 2 && small < 0.1 * large) {
      warnings.push(`The classes are imbalanced: the smallest has ${pct(small, labelled)}% of the rows.`);
    }
  } else if (tcol.type !== "numeric") {
    warnings.push(`Regression needs a numeric target; ${target} is categorical.`);
  }
  summary.sorted_by_target = sortedByTarget(rows, target, classification);
  if (summary.sorted_by_target) warnings.push("The rows look sorted by the target — the split shuffles them.");
  return summary;
}

// Problems that stop training (an empty list: ready).
export function validateDataset(dataset) {
  const problems = [];
  if (!dataset || !dataset.rows.length) return ["Load a dataset."];
  const tcol = dataset.columns.find((c) => c.name === dataset.target && c.role === "target");
  if (!tcol) problems.push("Choose a target column.");
  if (!dataset.columns.some((c) => c.role === "feature")) problems.push("Choose at least one feature column.");
  if (tcol) {
    const k = classCounts(dataset.rows, dataset.target).length;
    if (dataset.task === "regression" && tcol.type !== "numeric") problems.push("Regression needs a numeric target.");
    if (dataset.task === "binary" && k !== 2) problems.push(`A binary task needs exactly 2 classes; the target has ${k}.`);
    if (dataset.task === "multiclass" && k < 2) problems.push("Classification needs at least two classes.");
  }
  return problems;
}

// --- split -------------------------------------------------------------------------------------

export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle(array, random) {
  for (let i = array.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [array[i], array[j]] = [array[j], array[i]];
  }
  return array;
}

// split(rows, target, {seed, validation, stratify, task}) -> {train, val}: a seeded shuffle;
// classification targets (at most 50 classes) are split per class, with at least one validation
// row for every class that has two or more rows (when validation > 0). Rows without a target are
// shuffled in with the rest; nothing is lost or duplicated.
export function split(rows, target, {seed = 1, validation = 0.2, stratify = true, task} = {}) {
  const hash = (text) => [...text].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619), 2166136261); // FNV-1a
  const random = mulberry32(typeof seed === "number" ? seed : hash(String(seed)));
  const frac = Math.min(Math.max(Number(validation) || 0, 0), 0.9);
  let groups = [rows.map((_, i) => i)];
  if (stratify && task !== "regression") {
    const byClass = new Map();
    let numbers = true; // a numeric target with many values is a regression target: not stratified
    for (let i = 0; i < rows.length; i++) {
      const v = rows[i][target];
      if (v !== null && v !== undefined && !isNum(v)) numbers = false;
      const k = key(v);
      (byClass.get(k) || byClass.set(k, []).get(k)).push(i);
    }
    if (byClass.size <= MAX_CLASSES + 1 && (task || !numbers || byClass.size <= rows.length / 2)) {
      groups = [...byClass.keys()].sort().map((k) => byClass.get(k));
    }
  }
  const train = [], val = [];
  for (const group of groups) {
    shuffle(group, random);
    let nVal = Math.round(group.length * frac);
    if (frac > 0 && groups.length > 1 && group.length >= 2) nVal = Math.min(Math.max(nVal, 1), group.length - 1);
    group.forEach((i, j) => (j < nVal ? val : train).push(i));
  }
  return {train: shuffle(train, random).map((i) => rows[i]), val: shuffle(val, random).map((i) => rows[i])};
}

// --- preprocessing -----------------------------------------------------------------------------

// fitPreprocessor(trainRows, columns, task, target, {scaling: "zscore"|"minmax", max_categories, min_count})
// -> a JSON-serialisable description of every transformation, fitted on trainRows only.
export function fitPreprocessor(trainRows, columns, task, target, options = {}) {
  const {scaling = "zscore", max_categories = 100, min_count = 1} = options;
  if (!TASKS.includes(task)) throw new Error(`Unknown task: ${task}.`);
  const tcol = columns.find((c) => c.name === target);
  if (!tcol) throw new Error("Choose a target column.");
  const featureCols = columns.filter((c) => c.role === "feature" && c.name !== target);
  if (!featureCols.length) throw new Error("Choose at least one feature column.");
  if (!trainRows.length) throw new Error("There are no training rows.");

  const features = [], names = [];
  for (const col of featureCols) {
    if (col.type === "numeric") {
      let n = 0, sum = 0, missing = 0, min = Infinity, max = -Infinity;
      for (const row of trainRows) {
        const v = row[col.name];
        if (!isNum(v)) { missing++; continue; }
        n++; sum += v;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const mean = n ? sum / n : 0;
      let ss = 0;
      for (const row of trainRows) { const v = row[col.name]; if (isNum(v)) ss += (v - mean) ** 2; }
      const f = {name: col.name, type: "numeric", scaling, mean, std: n ? Math.sqrt(ss / n) : 0,
        min: n ? min : 0, max: n ? max : 0, missing_indicator: missing > 0};
      features.push(f);
      names.push(col.name);
      if (f.missing_indicator) names.push(`${col.name}__missing`);
    } else {
      const counts = new Map();
      for (const row of trainRows) { const k = key(row[col.name]); counts.set(k, (counts.get(k) || 0) + 1); }
      const kept = [...counts].filter(([, c]) => c >= min_count)
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, max_categories).map(([k]) => k).sort();
      features.push({name: col.name, type: "categorical", vocabulary: kept});
      for (const k of kept) names.push(`${col.name}=${k}`);
      names.push(`${col.name}=${UNSEEN}`);
    }
  }

  let encoding, outputs;
  if (task === "regression") {
    if (tcol.type !== "numeric") throw new Error(`Regression needs a numeric target; ${target} is categorical.`);
    const ys = trainRows.map((r) => r[target]).filter(isNum);
    if (!ys.length) throw new Error(`No training row has a numeric ${target}.`);
    const mean = ys.reduce((a, b) => a + b, 0) / ys.length;
    const std = Math.sqrt(ys.reduce((a, y) => a + (y - mean) ** 2, 0) / ys.length);
    encoding = {type: "regression", mean, std};
    outputs = 1;
  } else {
    const labels = classCounts(trainRows, target).map((c) => c.label);
    if (task === "binary" && labels.length !== 2) {
      throw new Error(`A binary task needs exactly 2 classes; ${target} has ${labels.length} in the training rows.`);
    }
    if (labels.length < 2) {
      throw new Error(`Classification needs at least two classes; ${target} has ${labels.length} in the training rows.`);
    }
    encoding = {type: task, labels};
    outputs = task === "binary" ? 1 : labels.length;
  }
  return {version: 1, task, target, features, target_encoding: encoding, feature_names: names, inputs: names.length, outputs};
}

function encodeFeatures(pre, row, out) {
  for (const f of pre.features) {
    const raw = row[f.name];
    if (f.type === "numeric") {
      const v = typeof raw === "string" ? normalizeCell(raw) : raw;
      const missing = !isNum(v);
      const x = missing ? f.mean : v;
      if (f.scaling === "minmax") out.push(f.max > f.min ? (x - f.min) / (f.max - f.min) : 0);
      else out.push(f.std > 0 ? (x - f.mean) / f.std : 0);
      if (f.missing_indicator) out.push(missing ? 1 : 0);
    } else {
      const k = key(typeof raw === "string" ? normalizeCell(raw) : raw);
      const at = f.vocabulary.indexOf(k);
      for (let i = 0; i <= f.vocabulary.length; i++) out.push(0);
      out[out.length - f.vocabulary.length - 1 + (at < 0 ? f.vocabulary.length : at)] = 1;
    }
  }
  return out;
}

// One raw row (CSV values or form strings) -> the model's input vector.
export function transformFeatures(pre, row) {
  return encodeFeatures(pre, row, []);
}

// transform(pre, rows) -> {x, y, dropped}: rows without a usable target (missing, not a number for
// regression, or a class the training rows never had) are dropped and counted.
export function transform(pre, rows) {
  const x = [], y = [], enc = pre.target_encoding;
  const index = enc.type === "regression" ? null : new Map(enc.labels.map((l, i) => [key(l), i]));
  let dropped = 0;
  for (const row of rows) {
    const t = row[pre.target];
    let target;
    if (enc.type === "regression") {
      if (!isNum(t)) { dropped++; continue; }
      target = [(t - enc.mean) / (enc.std || 1)];
    } else {
      const i = t === null || t === undefined ? undefined : index.get(key(t));
      if (i === undefined) { dropped++; continue; }
      target = enc.type === "binary" ? [i] : enc.labels.map((_, j) => (j === i ? 1 : 0));
    }
    x.push(encodeFeatures(pre, row, []));
    y.push(target);
  }
  return {x, y, dropped};
}

// The model's output vector -> {label, probabilities} (classification) or {value} (regression),
// in the original labels and scale.
export function decodeOutput(pre, vector) {
  const enc = pre.target_encoding;
  if (enc.type === "regression") return {value: vector[0] * (enc.std || 1) + enc.mean};
  if (enc.type === "binary") {
    const p = Math.min(Math.max(Number(vector[0]), 0), 1);
    return {label: enc.labels[p >= 0.5 ? 1 : 0], probabilities: [{label: enc.labels[0], p: 1 - p}, {label: enc.labels[1], p}]};
  }
  let best = 0;
  for (let i = 1; i < enc.labels.length; i++) if (vector[i] > vector[best]) best = i;
  return {label: enc.labels[best], probabilities: enc.labels.map((label, i) => ({label, p: Number(vector[i])}))};
}

// --- handing rows to the training worker ---------------------------------------------------------

// A dataset's rows as columns for the training worker: a column of numbers (and missing cells) as a
// Float64Array (NaN: missing), any other column as Int32Array codes into its list of values (-1:
// missing). Both are transferred, not copied, so handing 283k rows to the worker costs the page a few
// milliseconds instead of a structured clone of every row object; the work is done in slices of
// PACK_SLICE rows with a yield between them, so the page never stops for long.
const PACK_SLICE = 2000;
const valueKey = (v) => (typeof v === "string" ? `s${v}` : `${typeof v}${v}`);

function toCodes(column, upTo) { // a column that turned out not to be all numbers: code what came before
  const {values} = column;
  Object.assign(column, {values: null, codes: new Int32Array(values.length), index: new Map(), labels: []});
  for (let i = 0; i < upTo; i++) column.codes[i] = Number.isNaN(values[i]) ? -1 : codeOf(column, values[i]);
}
function codeOf(column, v) {
  const k = valueKey(v);
  let code = column.index.get(k);
  if (code === undefined) { code = column.labels.length; column.index.set(k, code); column.labels.push(v); }
  return code;
}

export async function packRows(rows, names) {
  const n = rows.length;
  const columns = names.map((name) => ({name, values: new Float64Array(n), codes: null, index: null, labels: null}));
  for (let from = 0; from < n; from += PACK_SLICE) {
    if (from) await new Promise((resolve) => setTimeout(resolve)); // let the page paint and answer input
    const to = Math.min(n, from + PACK_SLICE);
    for (const c of columns) {
      for (let i = from; i < to; i++) {
        const v = rows[i][c.name];
        if (c.values) {
          if (v === null || v === undefined) { c.values[i] = NaN; continue; }
          if (isNum(v)) { c.values[i] = v; continue; }
          toCodes(c, i);
        }
        c.codes[i] = v === null || v === undefined ? -1 : codeOf(c, v);
      }
    }
  }
  const packed = columns.map((c) => (c.values ? {name: c.name, values: c.values} : {name: c.name, codes: c.codes, labels: c.labels}));
  return {packed: {length: n, columns: packed}, transfer: packed.map((c) => (c.values || c.codes).buffer)};
}

/** The rows packRows() packed, as row objects again. */
export function unpackRows({length, columns}) {
  const rows = Array.from({length}, () => ({}));
  for (const c of columns) {
    if (c.values) for (let i = 0; i < length; i++) rows[i][c.name] = Number.isNaN(c.values[i]) ? null : c.values[i];
    else for (let i = 0; i < length; i++) rows[i][c.name] = c.codes[i] < 0 ? null : c.labels[c.codes[i]];
  }
  return rows;
}
