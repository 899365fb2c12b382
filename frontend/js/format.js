// One number format for the whole lab (workbench, library, charts): plain digits, never an exponent
// ("473,812", not "4.738e+5"), shares as "78.3 %", and a dash for a value that is missing (never "null").
const INTEGER = new Intl.NumberFormat("en-US", {maximumFractionDigits: 0});
const ONE_DECIMAL = new Intl.NumberFormat("en-US", {maximumFractionDigits: 1});
const SIGNIFICANT = new Intl.NumberFormat("en-US", {maximumSignificantDigits: 4});
export const NONE = "—";

const usable = (v) => typeof v === "number" && Number.isFinite(v);

/** A number for people: whole numbers grouped, large ones to a decimal at most, the rest to 4 significant digits. */
export function number(v) {
  if (!usable(v)) return NONE;
  const size = Math.abs(v);
  if (Number.isInteger(v) || size >= 10_000) return INTEGER.format(v);
  if (size >= 1000) return ONE_DECIMAL.format(v);
  return SIGNIFICANT.format(v);
}

/** A share from 0 to 1 as "78.3 %" (never "100.0 %" for a share below 1). */
export function percent(p) {
  if (!usable(p)) return NONE;
  let text = (100 * p).toFixed(1);
  if (text === "100.0" && p < 1) text = "99.9";
  return `${text} %`;
}

// The metrics shown as shares; everything else (losses, RMSE, MAE, R², AUC) is a plain number.
const SHARES = new Set(["acc", "val_acc", "accuracy", "precision", "recall", "f1"]);

/** A metric by its key in metrics.json ("val_acc", "rmse", ...). */
export const metric = (key, v) => (SHARES.has(key) ? percent(v) : number(v));

/** A duration: "0.8 s", "42 s", "3 min 20 s", "1 h 5 min". */
export function duration(ms) {
  if (!usable(ms)) return NONE;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ${Math.round(s % 60)} s`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}
