// Ready-to-copy calls of a deployment's predict URL (curl, Python with httpx, JavaScript fetch),
// filled with a real instance: one row of the dataset, as the model's features take it. Pure
// functions (no DOM, no TF.js): the deployment panel shows what they return.

/** One instance for the snippets: the row's value of each feature the preprocessor reads (null when absent). */
export function exampleInstance(pre, row = {}) {
  return Object.fromEntries(pre.features.map((f) => {
    const v = row[f.name];
    if (v === undefined || v === null || (typeof v === "number" && !Number.isFinite(v))) return [f.name, null];
    return [f.name, v];
  }));
}

const KEY_VAR = "MLLAB_API_KEY"; // the key stays in the environment, never in the snippet

// POSIX shell single quotes: ' becomes '\'' (close, an escaped quote, reopen).
const shellQuote = (text) => `'${text.replaceAll("'", "'\\''")}'`;

/** curl, reading the key from $MLLAB_API_KEY. */
export function curlSnippet(url, instance) {
  const body = JSON.stringify({instances: [instance]});
  return [
    `curl -sS -X POST ${shellQuote(url)} \\`,
    `  -H "Authorization: Bearer $${KEY_VAR}" \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d ${shellQuote(body)}`,
  ].join("\n");
}

// A JSON value as a Python literal (null/true/false differ; strings and numbers are JSON's own).
function pythonLiteral(value, indent = "") {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map((v) => pythonLiteral(v, indent)).join(", ")}]`;
  if (typeof value === "object") {
    const inner = `${indent}    `;
    const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pythonLiteral(v, inner)},`);
    return items.length ? `{\n${items.join("\n")}\n${indent}}` : "{}";
  }
  return JSON.stringify(value); // strings: JSON escapes are Python escapes; numbers: finite, same syntax
}

/** Python with httpx, reading the key from the environment. */
export function pythonSnippet(url, instance) {
  return [
    "import os",
    "",
    "import httpx",
    "",
    `instance = ${pythonLiteral(instance)}`,
    "response = httpx.post(",
    `    ${JSON.stringify(url)},`,
    `    headers={"Authorization": f"Bearer {os.environ['${KEY_VAR}']}"},`,
    '    json={"instances": [instance]},',
    "    timeout=30,",
    ")",
    "response.raise_for_status()",
    'print(response.json()["predictions"][0])',
  ].join("\n");
}

/** JavaScript fetch for Node 18+ (the key from process.env; in a page, CORS allows any origin, without cookies). */
export function fetchSnippet(url, instance) {
  return [
    `const instance = ${JSON.stringify(instance, null, 2)};`,
    `const response = await fetch(${JSON.stringify(url)}, {`,
    '  method: "POST",',
    `  headers: {"Authorization": \`Bearer \${process.env.${KEY_VAR}}\`, "Content-Type": "application/json"},`,
    "  body: JSON.stringify({instances: [instance]}),",
    "});",
    "if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);",
    "console.log((await response.json()).predictions[0]);",
  ].join("\n");
}

/** All three: [{id, label, text}]. */
export function snippets(url, instance) {
  return [
    {id: "curl", label: "curl", text: curlSnippet(url, instance)},
    {id: "python", label: "Python (httpx)", text: pythonSnippet(url, instance)},
    {id: "javascript", label: "JavaScript (fetch)", text: fetchSnippet(url, instance)},
  ];
}
