// The live training chart: uPlot (22 KB gzipped), loaded on demand with its
// stylesheet. uPlot styles its elements through the CSSOM (element.style.x = ...), which the lab's
// CSP (style-src 'self', no 'unsafe-inline') allows; only style attributes in markup would need it.
import {NONE, metric} from "./format.js";

const CSS = "/vendor/uPlot.min.css";
const JS = "/vendor/uPlot.iife.min.js";
let loading = null;

function loadUPlot() {
  loading ||= new Promise((resolve, reject) => {
    if (!document.querySelector(`link[href="${CSS}"]`)) {
      document.head.append(Object.assign(document.createElement("link"), {rel: "stylesheet", href: CSS}));
    }
    const script = Object.assign(document.createElement("script"), {src: JS});
    script.onload = () => resolve(globalThis.uPlot);
    script.onerror = () => { loading = null; script.remove(); reject(new Error("The chart library could not be loaded.")); };
    document.head.append(script);
  });
  return loading;
}

// uPlot's default font lists emoji fonts; looking those up the first time text is drawn took 400 ms in
// headless Chromium. The lab's charts use the page's own fonts.
const FONT = "12px system-ui, sans-serif";
const LABEL_FONT = `bold ${FONT}`;

const COLORS = {loss: "#0969da", val_loss: "#bc4c00", acc: "#1a7f37", val_acc: "#8250df", rmse: "#0969da", val_rmse: "#bc4c00"};
const NAMES = {loss: "loss", val_loss: "validation loss", acc: "accuracy", val_acc: "validation accuracy",
  rmse: "RMSE", val_rmse: "validation RMSE"};
const KEYS = Object.keys(NAMES);
const BEST = "#57606a";
const REDRAW_MS = 100; // at most ten redraws a second, however fast the epochs go

// The legend shows the value under the cursor, and the latest one when the cursor is elsewhere
// (uPlot's default there is "--"), in the lab's one number format.
const legendValue = (key) => (u, raw, series, idx) => {
  const values = u.data[series];
  const v = idx === null || idx === undefined ? values[values.length - 1] : raw;
  if (key === "epoch") return v === undefined || v === null ? NONE : String(v);
  return metric(key, v ?? null);
};

// A dashed line at the best epoch (lowest validation loss), labelled, drawn over the curves.
function bestEpochPlugin(best) {
  return {hooks: {draw: [(u) => {
    const epoch = best();
    if (epoch === null) return;
    const x = Math.round(u.valToPos(epoch, "x", true));
    const {top, height} = u.bbox;
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = BEST;
    ctx.fillStyle = BEST;
    ctx.lineWidth = devicePixelRatio;
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`; // FONT at this pixel ratio
    const label = `best: ${epoch}`;
    const room = u.bbox.left + u.bbox.width - x;
    ctx.textAlign = room < 70 * devicePixelRatio ? "right" : "left";
    ctx.fillText(label, x + (ctx.textAlign === "left" ? 4 : -4) * devicePixelRatio, top + 12 * devicePixelRatio);
    ctx.restore();
  }]}};
}

function plot(UPlot, container, title, keys, width, range, best) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  container.append(figure);
  const chart = new UPlot({
    title, width, height: 200,
    // Epochs from 1, never a zero-width range: with one point uPlot would search for ticks in a range of nothing.
    scales: {x: {time: false, range: (u, min, max) => [1, Math.max(2, max ?? 2)]}, ...(range ? {y: {range}} : {})},
    axes: [{label: "epoch", font: FONT, labelFont: LABEL_FONT}, {font: FONT, values: (u, ticks) => ticks.map((v) => metric(keys[0], v)),
      // wide enough for the longest label ("1,250,000"), which uPlot's fixed 50 px would cut
      size: (u, values) => 18 + 7 * Math.max(3, ...(values || []).map((v) => String(v).length))}],
    cursor: {drag: {x: false, y: false}},
    plugins: [bestEpochPlugin(best)],
    series: [{label: "epoch", value: legendValue("epoch")},
      ...keys.map((k) => ({label: NAMES[k], stroke: COLORS[k], width: 2, spanGaps: true, value: legendValue(k)}))],
  }, [[], ...keys.map(() => [])], figure);
  return {chart, keys, figure};
}

/**
 * A live chart in `container` (its contents are replaced): loss and validation loss; for
 * classification accuracy, for regression RMSE in the target's units; the best epoch (lowest
 * validation loss) marked. -> {add(row), flush(), setBest(epoch), destroy(), best()}, where row is
 * {epoch, loss, val_loss, acc?, val_acc?, rmse?, val_rmse?}.
 */
export async function createChart(container, {classification}) {
  const UPlot = await loadUPlot();
  container.replaceChildren();
  const width = () => { // side by side when there is room, else one under the other (390 px phones)
    const available = container.clientWidth || 320;
    return Math.max(200, available >= 640 ? Math.floor(available / 2) - 16 : available - 8);
  };
  let best = null, bestLoss = Infinity, fixed = false;
  const bestNow = () => best;
  const plots = [plot(UPlot, container, "Loss", ["loss", "val_loss"], width(), null, bestNow)];
  await new Promise((resolve) => setTimeout(resolve)); // one chart per task: the page keeps answering
  if (classification) plots.push(plot(UPlot, container, "Accuracy", ["acc", "val_acc"], width(), [0, 1], bestNow));
  else plots.push(plot(UPlot, container, "RMSE (target units)", ["rmse", "val_rmse"], width(), null, bestNow));
  const data = Object.fromEntries([["epoch", []], ...KEYS.map((k) => [k, []])]);
  let timer = null;
  const drawOne = ({chart, keys, figure}) => {
    chart.setData([data.epoch, ...keys.map((k) => data[k])]);
    chart.setLegend();
    if (best !== null) figure.dataset.bestEpoch = String(best);
  };
  // One chart per task, so each stays short and the page keeps answering.
  const drawSpread = () => {
    timer = null;
    drawOne(plots[0]);
    setTimeout(() => plots.slice(1).forEach(drawOne));
  };
  const resize = new ResizeObserver(() => plots.forEach(({chart}) => chart.setSize({width: width(), height: 200})));
  resize.observe(container);
  return {
    add(row) {
      data.epoch.push(row.epoch);
      for (const k of KEYS) data[k].push(row[k] ?? null);
      if (!fixed && typeof row.val_loss === "number" && Number.isFinite(row.val_loss) && row.val_loss < bestLoss) {
        bestLoss = row.val_loss;
        best = row.epoch;
      }
      timer ??= setTimeout(drawSpread, REDRAW_MS);
    },
    setBest(epoch) { best = epoch ?? best; fixed = true; },
    best: bestNow,
    flush() { clearTimeout(timer); drawSpread(); },
    destroy() { clearTimeout(timer); resize.disconnect(); plots.forEach(({chart}) => chart.destroy()); container.replaceChildren(); },
  };
}

/**
 * Loads uPlot and draws a throwaway chart out of sight. A browser's first canvas drawing starts its 2D
 * graphics (60-600 ms in headless Chromium) and uPlot's code runs slowly until the JIT has seen it;
 * the workbench calls this when a dataset is loaded, so neither pause lands in a training run.
 */
export async function warmUp() {
  const box = document.createElement("div");
  box.className = "chart-warm-up";
  box.setAttribute("aria-hidden", "true");
  document.body.append(box);
  try {
    const chart = await createChart(box, {classification: true});
    for (let epoch = 1; epoch <= 20; epoch++) chart.add({epoch, loss: 1 / epoch, val_loss: 1.1 / epoch, acc: 0.5, val_acc: 0.5});
    chart.flush();
    await new Promise((resolve) => setTimeout(resolve, 50));
    chart.destroy();
  } finally {
    box.remove();
  }
}
