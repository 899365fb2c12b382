// The live training chart: uPlot (22 KB gzipped), loaded on demand with its
// stylesheet. uPlot styles its elements through the CSSOM (element.style.x = ...), which the lab's
// CSP (style-src 'self', no 'unsafe-inline') allows; only style attributes in markup would need it.
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

const COLORS = {loss: "#0969da", val_loss: "#bc4c00", acc: "#1a7f37", val_acc: "#8250df"};
const NAMES = {loss: "loss", val_loss: "validation loss", acc: "accuracy", val_acc: "validation accuracy"};
const REDRAW_MS = 100; // at most ten redraws a second, however fast the epochs go

function plot(UPlot, container, title, keys, width, range) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  container.append(figure);
  const chart = new UPlot({
    title, width, height: 200,
    scales: {x: {time: false}, ...(range ? {y: {range}} : {})},
    axes: [{label: "epoch"}, {}],
    cursor: {drag: {x: false, y: false}},
    series: [{label: "epoch"}, ...keys.map((k) => ({label: NAMES[k], stroke: COLORS[k], width: 2, spanGaps: true}))],
  }, [[], ...keys.map(() => [])], figure);
  return {chart, keys};
}

/**
 * A live chart in `container` (its contents are replaced): loss and validation loss, and for
 * classification accuracy and validation accuracy. -> {add(row), flush(), destroy()}, where row is
 * {epoch, loss, val_loss, acc?, val_acc?}.
 */
export async function createChart(container, {classification}) {
  const UPlot = await loadUPlot();
  container.replaceChildren();
  const width = () => { // side by side when there is room, else one under the other (390 px phones)
    const available = container.clientWidth || 320;
    return Math.max(200, classification && available >= 640 ? Math.floor(available / 2) - 16 : available - 8);
  };
  const plots = [plot(UPlot, container, "Loss", ["loss", "val_loss"], width())];
  if (classification) plots.push(plot(UPlot, container, "Accuracy", ["acc", "val_acc"], width(), [0, 1]));
  const data = {epoch: [], loss: [], val_loss: [], acc: [], val_acc: []};
  let timer = null;
  const draw = () => {
    timer = null;
    for (const {chart, keys} of plots) chart.setData([data.epoch, ...keys.map((k) => data[k])]);
  };
  const resize = new ResizeObserver(() => plots.forEach(({chart}) => chart.setSize({width: width(), height: 200})));
  resize.observe(container);
  return {
    add(row) {
      data.epoch.push(row.epoch);
      for (const k of ["loss", "val_loss", "acc", "val_acc"]) data[k].push(row[k] ?? null);
      timer ??= setTimeout(draw, REDRAW_MS);
    },
    flush() { clearTimeout(timer); draw(); },
    destroy() { clearTimeout(timer); resize.disconnect(); plots.forEach(({chart}) => chart.destroy()); container.replaceChildren(); },
  };
}
