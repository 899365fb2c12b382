// TF.js inside the training worker (js/train-worker.js): the es2017 UMD builds (never tf.min.js, whose
// ES5 shims need 'unsafe-eval'), imported on demand, and the backend ladder webgpu -> webgl -> wasm -> cpu.
// setBackend() both throws (a backend that was never registered) and resolves false (one that failed to
// start), so every step checks both. The WebGPU script (73 KB gzipped) is fetched only when WebGPU can run
// here (a secure context, navigator.gpu and an adapter; headless Chromium has navigator.gpu but no
// adapter); the WASM script and its .wasm binary only when WASM is tried.
// The page itself imports only the pure parts (BACKENDS, LABEL, describeBackend, backendOverride).
const TF_SRC = "/vendor/tf.es2017.min.js";
const WEBGPU_SRC = "/vendor/tf-backend-webgpu.es2017.min.js";
const WASM_SRC = "/vendor/tf-backend-wasm.es2017.min.js";
const WASM_DIR = "/vendor/"; // tfjs-backend-wasm(-simd).wasm: the backend picks the SIMD one when it can
export const BACKENDS = ["webgpu", "webgl", "wasm", "cpu"];
export const LABEL = {webgpu: "WebGPU", webgl: "WebGL", wasm: "WASM", cpu: "CPU"};

let ready = null; // the Promise of the first ensureTf()
const scripts = new Map(); // src -> Promise of its import

function loadScript(src) {
  if (!scripts.has(src)) scripts.set(src, import(src).catch((err) => { scripts.delete(src); throw new Error(`Could not load ${src}: ${err.message}`); }));
  return scripts.get(src);
}

/** The tf global once loaded, else an error (for code that must run after ensureTf()). */
export function getTf() {
  if (!globalThis.tf) throw new Error("TF.js is not loaded yet.");
  return globalThis.tf;
}

export const isLoaded = () => Boolean(globalThis.tf);

/** ?backend=cpu|wasm|webgl|webgpu from the page's URL, or null. */
function backendOverride(search = globalThis.location?.search ?? "") {
  const wanted = new URLSearchParams(search).get("backend");
  return BACKENDS.includes(wanted) ? wanted : null;
}

const CHOICE_KEY = "mllab.backend.v1";
/** The backend the person chose: ?backend= in the URL, else the select's last value, else "auto". */
export function savedChoice() {
  let saved = null;
  try { saved = globalThis.localStorage?.getItem(CHOICE_KEY); } catch { /* private mode */ }
  return backendOverride() || (BACKENDS.includes(saved) ? saved : "auto");
}
export function saveChoice(choice) {
  try { globalThis.localStorage?.setItem(CHOICE_KEY, choice); } catch { /* private mode */ }
}

// Why WebGPU cannot be used here, or null when it might be (an adapter exists).
async function webgpuProblem() {
  if (!globalThis.isSecureContext) return "WebGPU needs a secure context (https or localhost)";
  if (!navigator.gpu) return "this browser has no WebGPU (navigator.gpu is missing)";
  try {
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? null : "no WebGPU adapter is available (no usable GPU)";
  } catch (err) {
    return `WebGPU failed to start (${err.message})`;
  }
}

// Registers a backend that lives in its own script; a reason string when it cannot be used.
async function register(name) {
  if (name === "webgpu") {
    const problem = await webgpuProblem();
    if (problem) return problem;
  }
  try {
    if (name === "webgpu") await loadScript(WEBGPU_SRC);
    if (name === "wasm") {
      const fresh = !scripts.has(WASM_SRC);
      await loadScript(WASM_SRC);
      if (fresh) getTf().wasm.setWasmPaths(WASM_DIR);
    }
  } catch (err) {
    return err.message;
  }
  return null;
}

/** Switch to one backend: null when it runs, else why not. */
export async function useBackend(name) {
  const tf = getTf();
  const problem = await register(name);
  if (problem) return problem;
  try {
    if (!tf.findBackendFactory(name)) return "not registered in this build";
    if (await tf.setBackend(name)) { // false: its initialisation failed (e.g. no WebGL context)
      await tf.ready();
      if (tf.getBackend() === name) return null;
    }
    return "it could not start";
  } catch (err) {
    return err.message;
  }
}

const described = (name, requested, skipped) => ({name, requested, skipped,
  reason: skipped.length ? skipped.map((s) => `${LABEL[s.name]} unavailable: ${s.why}`).join("; ") : null});

/**
 * Try the backends in order and keep the first that starts. Returns {name, requested, reason, skipped}:
 * `skipped` lists [{name, why}] for each better backend that could not be used, `reason` says it in
 * words (null when the first choice worked). A requested backend starts the ladder there.
 */
export async function pickBackend(requested = null) {
  const order = BACKENDS.slice(Math.max(0, BACKENDS.indexOf(requested)));
  const skipped = [];
  for (const name of order) {
    const why = await useBackend(name);
    if (!why) return described(name, requested, skipped);
    skipped.push({name, why});
  }
  throw new Error(`No TF.js backend could start. ${described(null, requested, skipped).reason}`);
}

/** Load TF.js (once); resolves to tf. The backend is picked by the caller (pickBackend, useBackend). */
export function ensureTf() {
  ready ||= (async () => {
    await loadScript(TF_SRC);
    const tf = getTf();
    tf.enableProdMode(); // no per-op NaN checks
    return tf;
  })().catch((err) => { ready = null; throw err; });
  return ready;
}

/** The words #backend-status shows for a picked backend ({name, requested, reason, probe?, choice?}). */
export function describeBackend({name, reason, requested, probe}) {
  let text = `Backend: ${name}`;
  if (probe?.length) {
    const times = probe.filter((p) => p.ms !== null).map((p) => `${LABEL[p.name]} ${p.ms.toFixed(1)} ms`).join(", ");
    text += ` (fastest for this model's size, measured per training batch: ${times})`;
  } else if (requested === name) text += ` (chosen)`;
  else if (requested) text += ` (${LABEL[requested]} was not usable — ${reason})`;
  else if (reason) text += ` (${reason})`;
  return `${text}.`;
}
