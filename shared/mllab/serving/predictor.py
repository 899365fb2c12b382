"""A saved lab model, ready to predict: model.json + weights.bin read once into a Preprocessor and a
Network, then `predict(instances)` turns raw feature values into labels and probabilities, or values
in the target's units, as the lab's own prediction form would."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mllab.platform import config
from mllab.platform.problems import Problem

from . import network, preprocessing
from .errors import ModelError
from .preprocessing import FieldError, InvalidInstances, Preprocessor

MAX_INSTANCES = 1000  # instances in one request
# Multiply-adds one request may cost: 1,000 instances of any model up to ~1M weights, fewer of a
# larger one (the largest the lab can save, 8 x 1024 units on 20,000 inputs, takes 40 per request).
MAX_MACS = 1_000_000_000


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # JSON.stringify never writes NaN or Infinity


def _read_json(model_json: bytes) -> dict[str, Any]:
    if len(model_json) > config.LIMITS.model_json_bytes:
        raise ModelError(f"model.json is larger than {config.LIMITS.model_json_bytes // 1024} KiB")
    try:
        doc = json.loads(model_json, parse_constant=_no_constants)
    except RecursionError:
        raise ModelError("model.json is nested too deeply to be a model") from None
    except ValueError as exc:  # includes UnicodeDecodeError
        raise ModelError(f"model.json is not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or "modelTopology" not in doc or "weightsManifest" not in doc:
        raise ModelError("model.json is not a TF.js layers model (no modelTopology or weightsManifest)")
    return doc


@dataclass(frozen=True)
class Model:
    network: network.Network
    preprocessor: Preprocessor

    @classmethod
    def from_files(cls, model_json: bytes, weights: bytes) -> Model:
        """Reads the two files the lab saves; ModelError says why they cannot be served."""
        if len(weights) > config.LIMITS.weights_bytes:
            raise ModelError(f"weights.bin is larger than {config.LIMITS.weights_bytes // (1024 * 1024)} MiB")
        doc = _read_json(model_json)
        pre = Preprocessor.from_metadata(doc.get("userDefinedMetadata"))
        net = network.load(doc["modelTopology"], doc["weightsManifest"], weights)
        if net.inputs != pre.inputs or net.outputs != pre.outputs:
            raise ModelError(
                f"the network takes {net.inputs} inputs and gives {net.outputs} outputs, but its preprocessing "
                f"makes {pre.inputs} and reads {pre.outputs}"
            )
        return cls(net, pre)

    @property
    def task(self) -> str:
        return self.preprocessor.task

    @property
    def max_instances(self) -> int:
        return max(1, min(MAX_INSTANCES, MAX_MACS // self.network.params))

    def predict(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        """One prediction per instance, in order. Bad input is a 422 Problem listing each instance
        and field at fault (nothing is computed for any of them); too many instances is a 413."""
        if not instances:
            raise Problem(422, "Send at least one instance.", errors=[{"field": "instances", "message": "empty"}])
        if len(instances) > self.max_instances:
            raise Problem(413, f"This model takes at most {self.max_instances} instances per request.")
        step = max(1, network.CHUNK_VALUES // self.network.widest)
        out: list[dict[str, Any]] = []
        errors: list[FieldError] = []
        for start in range(0, len(instances), step):
            try:
                rows = self.preprocessor.encode(instances[start : start + step], start=start)
            except InvalidInstances as exc:
                errors.extend(exc.errors)
                continue
            if errors:
                continue  # keep validating the rest; compute nothing
            for i, output in enumerate(self.network.forward(rows), start):
                if not preprocessing.finite_row(output):
                    errors.append(
                        FieldError(i, None, "the model's output overflows for these values (out of its range)")
                    )
                else:
                    out.append(self.preprocessor.decode(output))
        if errors:
            raise _problem(errors)
        return out


def _problem(errors: list[FieldError]) -> Problem:
    exc = InvalidInstances(errors)
    listed = [e.as_problem_error() for e in errors[: preprocessing.MAX_REPORTED]]
    return Problem(422, f"Some instances cannot be used: {exc}.", errors=listed)
