// Compare training runs (the library's runs table, two or more selected): their validation curves
// overlaid in one uPlot chart per metric, and a table sorted by the validation metric with each run's
// parameters side by side. Loaded on demand by js/library.js.
import {el} from "./dom.js";

// Distinct line colours, each at least 3:1 against white (WCAG's non-text contrast).
const COLORS = ["#3730a3", "#b42318", "#146c2e", "#9a3412", "#0e7490", "#86198f", "#4d5562", "#a16207"];
const UPLOT_JS = "/vendor/uPlot.iife.min.js";
const UPLOT_CSS = "/vendor/uPlot.min.css";

function loadUPlot() {
  if (globalThis.uPlot) return Promise.resolve(globalThis.uPlot);
  if (!document.querySelector(`link[href="${UPLOT_CSS}"]`)) {
    document.head.append(Object.assign(document.createElement("link"), {rel: "stylesheet", href: UPLOT_CSS}));
  }
  return new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), {src: UPLOT_JS});
    script.onload = () => resolve(globalThis.uPlot);
    script.onerror = () => { script.remove(); reject(new Error("The chart library could not be loaded.")); };
    document.head.append(script);
  });
}

const finite = (v) => typeof v === "number" && Number.isFinite(v);
const num = (v) => (!finite(v) ? "—" : String(Number(v.toPrecision(4))));
const pct = (v) => (!finite(v) ? "—" : `${(100 * v).toFixed(1)} %`);

/**
 * The metric the runs are ranked by: validation accuracy when every run is a classification, else a
 * validation error in the target's units when every run has one (RMSE), else the validation loss.
 */
function rankingMetric(runs) {
  const all = (key) => runs.every((r) => finite(r.metrics.final?.[key]));
  if (runs.every((r) => r.metrics.task !== "regression") && all("val_acc")) {
    return {key: "val_acc", name: "Validation accuracy", better: "higher", format: pct};
  }
  if (all("val_rmse")) return {key: "val_rmse", name: "Validation RMSE", better: "lower", format: num};
  return {key: "val_loss", name: "Validation loss", better: "lower", format: num};
}

/** The runs best first by `metric` (a run without the value goes last). */
function ranked(runs, metric) {
  const value = (r) => r.metrics.final?.[metric.key];
  const sign = metric.better === "higher" ? -1 : 1;
  return [...runs].sort((a, b) => {
    if (!finite(value(a))) return 1;
    if (!finite(value(b))) return -1;
    return sign * (value(a) - value(b));
  });
}

function overlay(UPlot, box, title, key, runs, width) {
  const longest = Math.max(...runs.map((r) => r.metrics.epochs.length));
  const x = Array.from({length: longest}, (_, i) => i + 1);
  const ys = runs.map((r) => x.map((_, i) => r.metrics.epochs[i]?.[key] ?? null));
  const figure = el("figure", {className: "chart"});
  box.append(figure);
  return new UPlot({
    title, width, height: 220,
    scales: {x: {time: false}},
    axes: [{label: "epoch"}, {}],
    cursor: {drag: {x: false, y: false}},
    series: [{label: "epoch"}, ...runs.map((r, i) => ({label: r.label, stroke: COLORS[i % COLORS.length], width: 2,
      spanGaps: true}))],
  }, [x, ...ys], figure);
}

const layers = (p) => (Array.isArray(p.layers) && p.layers.length
  ? p.layers.map((l) => `${l.units} ${l.activation}`).join(", ") : "none (linear)");

/**
 * Fills `container` with the comparison of `runs` ([{id, label, model, metrics}], metrics as in a run's
 * metrics.json). -> {destroy()} for the charts.
 */
export async function showComparison(container, runs) {
  const metric = rankingMetric(runs);
  const order = ranked(runs, metric);
  const color = new Map(runs.map((r, i) => [r.id, COLORS[i % COLORS.length]]));
  const chartBox = el("div", {id: "compare-chart", className: "charts"});
  const heads = ["Run", "Model", metric.name, "Validation loss", "Best epoch", "Epochs", "Hidden layers", "Optimizer",
    "Learning rate", "Batch", "Seed", "Parameters"];
  const table = el("table", {id: "compare-table", className: "lib-table"},
    el("caption", {textContent: `Runs best first by ${metric.name.toLowerCase()} (${metric.better} is better)`}),
    el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {scope: "col", textContent: h})))),
    el("tbody", {}, ...order.map((r, i) => {
      const p = r.metrics.params || {};
      const f = r.metrics.final || {};
      const swatch = el("span", {className: "swatch", "aria-hidden": "true"});
      swatch.style.background = color.get(r.id);
      const tr = el("tr", {},
        el("th", {scope: "row", className: "lib-num"}, swatch, r.label),
        el("td", {textContent: r.model}),
        el("td", {className: "lib-num"}, metric.format(f[metric.key]), i === 0 ? el("span", {className: "badge", textContent: "best"}) : null),
        el("td", {className: "lib-num", textContent: num(f.val_loss)}),
        el("td", {className: "lib-num", textContent: f.best_epoch ? String(f.best_epoch) : "—"}),
        el("td", {className: "lib-num", textContent: String(r.metrics.epochs.length)}),
        el("td", {textContent: layers(p)}),
        el("td", {textContent: p.optimizer === "sgd" ? "SGD" : p.optimizer ? "Adam" : "—"}),
        el("td", {className: "lib-num", textContent: num(p.learning_rate)}),
        el("td", {className: "lib-num", textContent: num(p.batch_size)}),
        el("td", {className: "lib-num", textContent: num(p.seed)}),
        el("td", {className: "lib-num", textContent: finite(p.param_count) ? p.param_count.toLocaleString("en-US") : "—"}));
      tr.dataset.id = r.id;
      tr.dataset.value = String(f[metric.key] ?? "");
      return tr;
    })));
  container.append(chartBox,
    el("div", {className: "lib-scroll", tabIndex: 0, role: "region", "aria-label": "Compared runs"}, table));
  const UPlot = await loadUPlot();
  const two = metric.key === "val_acc";
  const width = () => { // side by side when there is room, else one under the other (phones)
    const available = chartBox.clientWidth || 320;
    return Math.max(220, two && available >= 760 ? Math.floor(available / 2) - 12 : available - 8);
  };
  const charts = [overlay(UPlot, chartBox, "Validation loss", "val_loss", runs, width())];
  if (two) charts.push(overlay(UPlot, chartBox, "Validation accuracy", "val_acc", runs, width()));
  const resize = new ResizeObserver(() => charts.forEach((c) => c.setSize({width: width(), height: 220})));
  resize.observe(container);
  return {destroy() { resize.disconnect(); charts.forEach((c) => c.destroy()); }};
}
