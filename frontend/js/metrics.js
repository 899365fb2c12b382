// Metrics people act on, computed from predictions in the target's own units (no TF.js): RMSE, MAE
// and R² for a regression; accuracy, per-class precision/recall/F1 and ROC AUC (binary) for a
// classification; and hints in plain words when the curves show overfitting or a learning rate that
// is too high. Pure functions: the training worker computes them, the page and the library show them.

const finite = (v) => typeof v === "number" && Number.isFinite(v);
const round = (v) => (finite(v) ? Number(v.toPrecision(7)) : null);

/** {rmse, mae, r2} of predictions against actual values (same units); r2 is null for a constant target. */
export function regressionMetrics(actual, predicted) {
  const n = actual.length;
  if (!n) return {rmse: null, mae: null, r2: null};
  let se = 0, ae = 0, mean = 0;
  for (let i = 0; i < n; i++) mean += actual[i];
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const e = predicted[i] - actual[i];
    se += e * e;
    ae += Math.abs(e);
    ss += (actual[i] - mean) ** 2;
  }
  return {rmse: round(Math.sqrt(se / n)), mae: round(ae / n), r2: ss > 0 ? round(1 - se / ss) : null};
}

/**
 * Per-class precision, recall, F1 and support from a confusion matrix (rows: actual, columns: predicted),
 * with the class labels. A class never predicted has no precision (null), one never present no recall.
 */
export function perClass(matrix, labels) {
  return labels.map((label, k) => {
    const tp = matrix[k][k];
    const support = matrix[k].reduce((a, b) => a + b, 0);
    const predicted = matrix.reduce((a, row) => a + row[k], 0);
    const precision = predicted ? tp / predicted : null;
    const recall = support ? tp / support : null;
    const f1 = precision !== null && recall !== null && precision + recall > 0 ? (2 * precision * recall) / (precision + recall)
      : precision === null || recall === null ? null : 0;
    return {label: String(label), precision: round(precision), recall: round(recall), f1: round(f1), support};
  });
}

/** The share of the matrix on its diagonal. */
export function accuracy(matrix) {
  let hit = 0, all = 0;
  matrix.forEach((row, i) => row.forEach((n, j) => { all += n; if (i === j) hit += n; }));
  return all ? round(hit / all) : null;
}

/**
 * ROC AUC of scores for the positive class (actual: 0/1): the probability that a random positive
 * scores above a random negative, ties counting half (the Mann-Whitney U statistic). null without both classes.
 */
export function rocAuc(actual, scores) {
  const order = scores.map((s, i) => i).sort((a, b) => scores[a] - scores[b]);
  let positives = 0, rankSum = 0;
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && scores[order[j + 1]] === scores[order[i]]) j++;
    const rank = (i + j) / 2 + 1; // the mean rank of a run of ties
    for (let k = i; k <= j; k++) if (actual[order[k]] === 1) { positives++; rankSum += rank; }
    i = j + 1;
  }
  const negatives = actual.length - positives;
  if (!positives || !negatives) return null;
  return round((rankSum - (positives * (positives + 1)) / 2) / (positives * negatives));
}

/** The confusion matrix of actual class indexes against predicted ones. */
export function confusion(actual, predicted, classes) {
  const matrix = Array.from({length: classes}, () => new Array(classes).fill(0));
  for (let i = 0; i < actual.length; i++) matrix[actual[i]][predicted[i]]++;
  return matrix;
}

/** The epoch (1-based) with the lowest validation loss, or null. */
export function bestEpoch(epochs) {
  let best = null;
  for (const row of epochs) if (finite(row.val_loss) && (best === null || row.val_loss < best.val_loss)) best = row;
  return best ? best.epoch : null;
}

const OVERFIT_EPOCHS = 5; // validation loss rising this many epochs after its best, while training loss falls
const OVERFIT_RISE = 0.05; // ...and at least 5 % above its best
const SWING = 0.6; // the training loss changes direction in at least 60 % of the last epochs...
const SWING_SIZE = 0.1; // ...by steps of at least 10 % of its level on average
const LAST = 20;

function divergence(epochs) {
  const losses = epochs.map((r) => r.loss);
  if (losses.some((v) => v === null || v === undefined || !finite(v))) return "nan";
  const first = losses[0], min = Math.min(...losses), last = losses[losses.length - 1];
  if (losses.length >= 3 && last > first * 1.5 && last > min * 3) return "rising";
  const tail = losses.slice(-LAST);
  if (tail.length < 8) return null;
  let turns = 0, step = 0;
  for (let i = 2; i < tail.length; i++) {
    if (Math.sign(tail[i] - tail[i - 1]) * Math.sign(tail[i - 1] - tail[i - 2]) < 0) turns++;
    step += Math.abs(tail[i] - tail[i - 1]);
  }
  const level = tail.reduce((a, b) => a + b, 0) / tail.length;
  return turns >= SWING * (tail.length - 2) && step / (tail.length - 2) >= SWING_SIZE * level ? "oscillating" : null;
}

/**
 * Hints in plain words from the curves: [{kind: "learning-rate"|"overfitting", text}]. `heldOut` false:
 * the validation loss is the training loss, so overfitting cannot show.
 */
export function diagnose(epochs, {learningRate, heldOut = true} = {}) {
  const hints = [];
  if (!epochs.length) return hints;
  const lr = finite(learningRate) ? ` (${learningRate})` : "";
  const diverged = divergence(epochs);
  if (diverged === "nan") {
    hints.push({kind: "learning-rate", text: `The loss became NaN (it blew up): the learning rate${lr} is too high. ` +
      "Try one ten times lower."});
  } else if (diverged === "rising") {
    hints.push({kind: "learning-rate", text: `The training loss grew instead of falling: the learning rate${lr} is ` +
      "probably too high. Try one ten times lower."});
  } else if (diverged === "oscillating") {
    hints.push({kind: "learning-rate", text: `The training loss jumps up and down instead of settling: the learning ` +
      `rate${lr} is probably too high. Try one three to ten times lower.`});
  }
  const best = bestEpoch(epochs);
  if (heldOut && best !== null) {
    const at = epochs.find((r) => r.epoch === best), last = epochs[epochs.length - 1];
    const after = epochs.filter((r) => r.epoch > best);
    if (after.length >= OVERFIT_EPOCHS && finite(last.val_loss) && last.val_loss > at.val_loss * (1 + OVERFIT_RISE) &&
        finite(last.loss) && last.loss < at.loss) {
      hints.push({kind: "overfitting", text: `The model is overfitting: after epoch ${best} the validation loss rose ` +
        `while the training loss kept falling, so it was learning the training rows rather than the pattern. ` +
        `The model keeps the weights of epoch ${best}. Fewer units or layers, early stopping (patience) or more rows help.`});
    }
  }
  return hints;
}
