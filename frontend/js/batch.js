// Batch predictions in the browser: a CSV in, the same CSV back with prediction columns, computed by
// the model in the lab's worker (js/trainer.js; nothing is uploaded). Loaded by the results' "Predict a
// CSV file" form on first use. Rows are read as the data panel reads them (js/data.js parseCsv) and
// encoded in the worker as the prediction form encodes one (transformFeatures), a chunk per model call.
import {decodeOutput, parseCsv, toCsv} from "./data.js";
import {call} from "./trainer.js";

const CHUNK_ROWS = 1000; // rows per model call: bounded memory, and the page stays responsive

// A column name not already taken: "<name>", then "<name>_2", "<name>_3", ...
function free(name, taken) {
  let candidate = name;
  for (let i = 2; taken.has(candidate); i++) candidate = `${name}_${i}`;
  taken.add(candidate);
  return candidate;
}

/** The columns the predictions add: [{name, pick(result)}] (a label and a probability per class, or a value). */
function predictionColumns(pre, fields) {
  const taken = new Set(fields);
  const enc = pre.target_encoding;
  if (enc.type === "regression") return [{name: free(`${pre.target}_predicted`, taken), pick: (r) => r.value}];
  return [{name: free(`${pre.target}_predicted`, taken), pick: (r) => r.label},
    ...enc.labels.map((label, i) => ({name: free(`p(${pre.target}=${label})`, taken), pick: (r) => r.probabilities[i].p}))];
}

/**
 * Predict every row of a CSV file (File or text) with a model handle (js/trainer.js) -> {csv, rows, columns, fields}. Throws an Error
 * saying what to fix when the file lacks a feature column. onProgress(done, total) after each chunk.
 */
export async function predictCsv(handle, pre, input, {onProgress = () => {}} = {}) {
  const parsed = await parseCsv(input);
  const missing = pre.features.map((f) => f.name).filter((name) => !parsed.fields.includes(name));
  if (missing.length) {
    throw new Error(`The file has no column ${missing.map((m) => `“${m}”`).join(", ")}; the model needs ` +
      `${pre.features.map((f) => f.name).join(", ")}.`);
  }
  const columns = predictionColumns(pre, parsed.fields);
  const out = new Array(parsed.rows.length);
  for (let start = 0; start < parsed.rows.length; start += CHUNK_ROWS) {
    const chunk = parsed.rows.slice(start, start + CHUNK_ROWS);
    const {outputs: flat} = await call("predictRows", {id: handle.id, preprocessor: pre, rows: chunk});
    chunk.forEach((row, i) => {
      const result = decodeOutput(pre, Array.from(flat.subarray(i * pre.outputs, (i + 1) * pre.outputs)));
      const added = Object.fromEntries(columns.map((c) => [c.name, c.pick(result)]));
      out[start + i] = {...row, ...added};
    });
    onProgress(Math.min(start + CHUNK_ROWS, parsed.rows.length), parsed.rows.length);
  }
  const fields = [...parsed.fields, ...columns.map((c) => c.name)];
  return {csv: toCsv(fields, out), rows: out.length, columns: columns.map((c) => c.name), fields};
}
