"""Server-side predictions equal the lab's: models trained by the lab in Chromium (binary, multiclass
and regression; every hidden activation the builder offers; mean imputation with missing indicators,
z-score and min-max scaling, one-hot categories with missing and unseen values, label encoding) are
saved as the lab saves them, and the server's inference (mllab.serving, no TensorFlow) predicts the
same rows as TF.js did in the page, within 1e-5, by both of its implementations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mllab.serving.predictor import Model

from . import lab_support
from .serving_support import (
    CHURN_EXTRA,
    FLOWERS_EXTRA,
    HOUSES_EXTRA,
    ServingLab,
    Trained,
    churn_csv,
    flowers_csv,
    houses_csv,
)

TOLERANCE = 1e-5
TRAIN_MS = 120_000

lab = lab_support.fixture(ServingLab)


def agree(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE


def assert_same_predictions(trained: Trained) -> float:
    """Every row: the network's outputs by plain Python and by numpy, and the decoded prediction, equal
    TF.js's within the tolerance. Returns the largest difference seen."""
    model = Model.from_files(trained.model_json, trained.weights)
    assert model.task == trained.task
    encoded = model.preprocessor.encode(trained.rows)
    worst = 0.0
    for path in (model.network.forward_python, model.network.forward_numpy):
        for i, (ours, theirs) in enumerate(zip(path(encoded), trained.tfjs, strict=True)):
            diffs = [abs(a - b) for a, b in zip(ours, theirs["output"], strict=True)]
            worst = max(worst, *diffs)
            assert max(diffs) <= TOLERANCE, f"row {i} ({path.__name__}): {ours} vs TF.js {theirs['output']}"
    for i, (ours, theirs) in enumerate(zip(model.predict(trained.rows), trained.tfjs, strict=True)):
        if trained.task == "regression":
            assert agree(ours["value"], theirs["value"]), f"row {i}: {ours['value']} vs TF.js {theirs['value']}"
            continue
        assert [p["label"] for p in ours["probabilities"]] == [p["label"] for p in theirs["probabilities"]]
        assert all(agree(a["p"], b["p"]) for a, b in zip(ours["probabilities"], theirs["probabilities"], strict=True))
        top = sorted((p["p"] for p in theirs["probabilities"]), reverse=True)
        if top[0] - top[1] > 2 * TOLERANCE:  # a tie within the tolerance may break either way
            assert ours["label"] == theirs["label"], f"row {i}: {ours['label']!r} vs TF.js {theirs['label']!r}"
    return worst


def kinds(pre: dict[str, Any]) -> set[str]:
    """The preprocessing a preprocessor applies, by name."""
    out = {f"target:{pre['target_encoding']['type']}"}
    for f in pre["features"]:
        if f["type"] == "numeric":
            out.add(f"scale:{f['scaling']}")
            if f["missing_indicator"]:
                out.add("impute+indicator")
        else:
            out.add("one-hot")
            if "__missing__" in f["vocabulary"]:
                out.add("one-hot:missing")
    return out


def train(lab: ServingLab, tmp_path: Path, name: str, csv: str, layers: list[tuple[int, str]], **kw) -> str:
    path = tmp_path / name
    path.write_text(csv)
    lab.open()
    return lab.train_csv(path, layers, **kw)


def test_binary_predictions_equal_tfjs(lab: ServingLab, tmp_path: Path) -> None:
    task = train(lab, tmp_path, "churn.csv", churn_csv(), [(12, "tanh"), (6, "sigmoid"), (4, "linear")])
    assert task == "binary"
    trained = lab.trained(task, lab.dataset_rows() + CHURN_EXTRA)
    assert kinds(trained.preprocessor) >= {
        "target:binary",
        "scale:zscore",
        "impute+indicator",
        "one-hot",
        "one-hot:missing",
    }
    code = next(f for f in trained.preprocessor["features"] if f["name"] == "code")
    assert {"1", "2.5", "1e-7", "300"} <= set(code["vocabulary"])  # numbers as categories, spelled by JavaScript
    worst = assert_same_predictions(trained)
    print(f"\nbinary: {len(trained.rows)} rows, largest difference from TF.js {worst:.2e}")


def test_multiclass_predictions_equal_tfjs(lab: ServingLab, tmp_path: Path) -> None:
    task = train(lab, tmp_path, "flowers.csv", flowers_csv(), [(16, "relu"), (8, "elu")], lr=0.02)
    assert task == "multiclass"
    trained = lab.trained(task, lab.dataset_rows() + FLOWERS_EXTRA)
    assert kinds(trained.preprocessor) >= {"target:multiclass", "scale:zscore", "one-hot"}
    assert trained.preprocessor["target_encoding"]["labels"] == ["setosa", "versicolor", "virginica"]
    worst = assert_same_predictions(trained)
    print(f"\nmulticlass: {len(trained.rows)} rows, largest difference from TF.js {worst:.2e}")


@pytest.mark.parametrize("scaling", [None, "minmax"])
def test_regression_predictions_equal_tfjs(lab: ServingLab, tmp_path: Path, scaling: str | None) -> None:
    task = train(lab, tmp_path, "houses.csv", houses_csv(), [(16, "selu"), (8, "softplus"), (8, "swish")])
    assert task == "regression"
    trained = lab.trained(task, lab.dataset_rows() + HOUSES_EXTRA, scaling=scaling)
    expected = {"target:regression", "impute+indicator", "one-hot", "one-hot:missing", f"scale:{scaling or 'zscore'}"}
    assert kinds(trained.preprocessor) >= expected
    worst = assert_same_predictions(trained)
    print(f"\nregression ({scaling or 'zscore'}): {len(trained.rows)} rows, largest difference from TF.js {worst:.2e}")
