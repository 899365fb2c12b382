"""Lab-shaped model files without a browser, for the serving unit tests and the predict bench:
model.json in the exact layout TF.js's save writes from the lab (tests/golden/lab_model/ holds one
the lab made), a preprocessor as js/data.js fits it, and seeded random weights."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "lab_model"
HEADS = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}


def numeric(name: str, *, mean: float = 0.0, std: float = 1.0, lo: float = -3.0, hi: float = 3.0, **kw) -> dict:
    return {"name": name, "type": "numeric", "scaling": kw.get("scaling", "zscore"), "mean": mean, "std": std,
            "min": lo, "max": hi, "missing_indicator": kw.get("missing_indicator", False)}  # fmt: skip


def categorical(name: str, vocabulary: list[str]) -> dict:
    return {"name": name, "type": "categorical", "vocabulary": vocabulary}


def width(feature: dict) -> int:
    if feature["type"] == "numeric":
        return 2 if feature["missing_indicator"] else 1
    return len(feature["vocabulary"]) + 1


def preprocessor(features: list[dict], task: str = "binary", labels: list | None = None) -> dict:
    if task == "regression":
        encoding: dict[str, Any] = {"type": "regression", "mean": 40.0, "std": 10.0}
        outputs = 1
    else:
        labels = labels or (["no", "yes"] if task == "binary" else ["a", "b", "c"])
        encoding = {"type": task, "labels": labels}
        outputs = 1 if task == "binary" else len(labels)
    inputs = sum(width(f) for f in features)
    return {"version": 1, "task": task, "target": "y", "features": features, "target_encoding": encoding,
            "feature_names": [f"x{i}" for i in range(inputs)], "inputs": inputs, "outputs": outputs}  # fmt: skip


def topology(inputs: int, layers: list[tuple[int, str]]) -> dict:
    out = []
    for i, (units, activation) in enumerate(layers):
        config: dict[str, Any] = {"units": units, "activation": activation, "use_bias": True,
                                  "name": f"dense_Dense{i + 1}", "trainable": True, "dtype": "float32"}  # fmt: skip
        if i == 0:
            config["batch_input_shape"] = [None, inputs]
        out.append({"class_name": "Dense", "config": config})
    return {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": out},
            "keras_version": "tfjs-layers 4.22.0", "backend": "tensor_flow.js"}  # fmt: skip


def manifest(inputs: int, layers: list[tuple[int, str]]) -> list[dict]:
    weights, width_in = [], inputs
    for i, (units, _) in enumerate(layers):
        weights.append({"name": f"dense_Dense{i + 1}/kernel", "shape": [width_in, units], "dtype": "float32"})
        weights.append({"name": f"dense_Dense{i + 1}/bias", "shape": [units], "dtype": "float32"})
        width_in = units
    return [{"paths": ["weights.bin"], "weights": weights}]


def random_weights(inputs: int, layers: list[tuple[int, str]], seed: int = 1, scale: float = 1.0) -> bytes:
    """Glorot-uniform-like kernels and small biases, little-endian float32 (numpy for big models)."""
    count = 0
    width_in = inputs
    for units, _ in layers:
        count += width_in * units + units
        width_in = units
    if count > 100_000:
        import numpy as np

        return (np.random.default_rng(seed).uniform(-0.1, 0.1, count) * scale).astype("<f4").tobytes()
    r = random.Random(seed)
    values, width_in = [], inputs
    for units, _ in layers:
        limit = scale * (6 / (width_in + units)) ** 0.5
        values += [r.uniform(-limit, limit) for _ in range(width_in * units)]
        values += [r.uniform(-0.1, 0.1) for _ in range(units)]
        width_in = units
    return struct.pack(f"<{len(values)}f", *values)


def files(
    features: list[dict],
    hidden: list[tuple[int, str]],
    task: str = "binary",
    *,
    labels: list | None = None,
    seed: int = 1,
    scale: float = 1.0,
) -> tuple[bytes, bytes]:
    """(model.json, weights.bin) of a lab model: these features, these hidden layers, the task's head."""
    pre = preprocessor(features, task, labels)
    layers = [*hidden, (pre["outputs"], HEADS[task])]
    doc = {
        "modelTopology": topology(pre["inputs"], layers),
        "format": "layers-model",
        "generatedBy": "TensorFlow.js tfjs-layers v4.22.0",
        "convertedBy": None,
        "userDefinedMetadata": {"preprocessor": pre, "spec": {"task": task}},
        "weightsManifest": manifest(pre["inputs"], layers),
    }
    return json.dumps(doc).encode(), random_weights(pre["inputs"], layers, seed, scale)


def edited(model_json: bytes, edit) -> bytes:
    """model.json after `edit(doc)` changed it in place."""
    doc = json.loads(model_json)
    edit(doc)
    return json.dumps(doc).encode()


def golden() -> tuple[bytes, bytes, dict]:
    """The lab's own files (a binary model trained in Chromium) and TF.js's predictions with it."""
    return (
        (GOLDEN / "model.json").read_bytes(),
        (GOLDEN / "weights.bin").read_bytes(),
        json.loads((GOLDEN / "tfjs_predictions.json").read_text()),
    )
