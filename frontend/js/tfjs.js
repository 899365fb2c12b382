// TF.js on demand: the es2017 UMD build (never tf.min.js, whose
// ES5 shims need 'unsafe-eval'), injected as a classic script the first time something needs it, then
// a backend picked down the ladder webgpu -> webgl -> cpu. setBackend() both throws (a backend that was
// never registered) and resolves false (one that failed to start), so every step checks both.
// The WebGPU backend script (73 KB gzipped) is fetched only when WebGPU can run here: a secure
// context, navigator.gpu and an adapter (headless Chromium has navigator.gpu but no adapter).
const TF_SRC = "/vendor/tf.es2017.min.js";
const WEBGPU_SRC = "/vendor/tf-backend-webgpu.es2017.min.js";
export const BACKENDS = ["webgpu", "webgl", "cpu"];

const scripts = new Map(); // src -> Promise, so each script is injected once
let ready = null; // the Promise of the first ensureTf()

function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = src;
      tag.async = false;
      tag.onload = () => resolve();
      tag.onerror = () => { scripts.delete(src); tag.remove(); reject(new Error(`Could not load ${src}.`)); };
      document.head.append(tag);
    }));
  }
  return scripts.get(src);
}

/** The tf global once loaded, else an error (for code that must run after ensureTf()). */
export function getTf() {
  if (!globalThis.tf) throw new Error("TF.js is not loaded yet.");
  return globalThis.tf;
}

export const isLoaded = () => Boolean(globalThis.tf);

/** ?backend=cpu|webgl|webgpu from the page's URL, or null. */
export function backendOverride(search = location.search) {
  const wanted = new URLSearchParams(search).get("backend");
  return BACKENDS.includes(wanted) ? wanted : null;
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

const LABEL = {webgpu: "WebGPU", webgl: "WebGL", cpu: "CPU"};

/**
 * Try the backends in order and keep the first that starts. Returns {name, requested, reason, skipped}:
 * `skipped` lists [{name, why}] for each better backend that could not be used, `reason` says it in
 * words (null when the first choice worked). An override starts the ladder at that backend.
 */
export async function pickBackend(requested = backendOverride()) {
  const tf = getTf();
  const order = BACKENDS.slice(Math.max(0, BACKENDS.indexOf(requested)));
  const skipped = [];
  const done = (name) => ({name, requested, skipped,
    reason: skipped.length ? skipped.map((s) => `${LABEL[s.name]} unavailable: ${s.why}`).join("; ") : null});
  for (const name of order) {
    if (name === "webgpu") {
      const problem = await webgpuProblem();
      if (problem) { skipped.push({name, why: problem}); continue; }
      try {
        await loadScript(WEBGPU_SRC); // registers 'webgpu' on the global tf
      } catch (err) {
        skipped.push({name, why: err.message});
        continue;
      }
    }
    try {
      if (!tf.findBackendFactory(name)) { skipped.push({name, why: "not registered in this build"}); continue; }
      if (await tf.setBackend(name)) { // false: its initialisation failed (e.g. no WebGL context)
        await tf.ready();
        if (tf.getBackend() === name) return done(name);
      }
      skipped.push({name, why: "it could not start"});
    } catch (err) {
      skipped.push({name, why: err.message});
    }
  }
  throw new Error(`No TF.js backend could start. ${done(null).reason}`);
}

/** Load TF.js (once) and pick a backend (once); resolves to {tf, backend: {name, reason, requested}}. */
export function ensureTf() {
  ready ||= (async () => {
    await loadScript(TF_SRC);
    const tf = getTf();
    tf.enableProdMode(); // no per-op NaN checks
    const backend = await pickBackend();
    return {tf, backend};
  })().catch((err) => { ready = null; throw err; });
  return ready;
}

/** The words #backend-status shows for a picked backend. */
export function describeBackend({name, reason, requested}) {
  let text = `Backend: ${name}`;
  if (requested === name) text += ` (chosen with ?backend=${name})`;
  else if (requested) text += ` (?backend=${requested} was not usable — ${reason})`;
  else if (reason) text += ` (${reason})`;
  if (name !== "cpu") text += ". Small models often train faster with ?backend=cpu.";
  return text;
}
