// What the lab's panels share: the current dataset (data panel -> builder and training) and the
// trained model (training -> files and cloud). A tiny event bus, no framework.
const listeners = {};
export const state = {
  dataset: null, // see js/data.js: {name, source, columns, rows, target, task, file?}
  model: null, // see js/train.js: the trained tf.LayersModel with its preprocessing and metrics
  set(key, value) { this[key] = value; (listeners[key] || []).forEach((l) => l(value)); },
  on(key, listener) { (listeners[key] ||= []).push(listener); },
};
