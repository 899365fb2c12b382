"""The preprocessing the lab stores in model.json (userDefinedMetadata.preprocessor, written by
frontend/js/data.js fitPreprocessor), read strictly and applied to raw instances exactly as the page
applies it (data.js encodeFeatures and decodeOutput):

- numeric features: a missing value is imputed with the training mean (and flagged in an extra
  `<name>__missing` input when the training rows had missing values), then scaled by z-score
  ((x - mean) / std, 0 when std is 0) or min-max ((x - min) / (max - min), 0 when max == min);
- categorical features: one-hot over the training vocabulary plus one slot for unseen categories
  (a missing value is the category `__missing__`);
- the target: regression outputs are un-standardised ((y * std) + mean, std 0 read as 1); binary
  outputs are a probability of the second label (clamped to [0, 1], label at p >= 0.5); multiclass
  outputs are softmax probabilities in label order (label: the first largest).

What the API adds over the page is strictness about input: a feature the model does not know, a
feature left out, or a value of the wrong type is an error naming the instance and the field
(the page's form cannot send those)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from . import cells
from .errors import ModelError

TASKS = ("binary", "multiclass", "regression")
FLOAT32_MAX = 3.4028234663852886e38  # TF.js feeds the model float32: a larger input becomes infinity
MAX_REPORTED = 20  # field errors listed in one answer; the detail counts the rest


# The spec is read by hand into frozen dataclasses, not with pydantic: the predict path loads no pydantic
# (about 70 ms of CPU at each cold start; docs/operations.md). Strict as the lab writes it: JSON numbers
# (finite), booleans and text of the right kind; unknown keys are ignored (a newer lab may add some).


class SpecError(ValueError):
    """The preprocessor is not the lab's: `where` (a dotted path into it) and why."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _field(obj: dict[str, Any], where: str, name: str, *, optional: bool = False) -> Any:
    if name not in obj:
        if optional:
            return None
        raise SpecError(f"{where}{name}", "Field required")
    return obj[name]


def _object(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise SpecError(where or "(preprocessor)", "Input should be an object")
    return value


def _text(value: Any, where: str) -> str:
    if type(value) is not str:
        raise SpecError(where, "Input should be text")
    return value


def _choice(value: Any, where: str, options: tuple[Any, ...]) -> Any:
    if isinstance(value, bool) or value not in options:
        raise SpecError(where, "Input should be " + " or ".join(repr(o) for o in options))
    return value


def _number(value: Any, where: str, *, ge: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(where, "Input should be a finite number")
    if ge is not None and value < ge:
        raise SpecError(where, f"Input should be greater than or equal to {ge:g}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if type(value) is not int or value < 1:
        raise SpecError(where, "Input should be a whole number, at least 1")
    return value


@dataclass(frozen=True)
class NumericFeature:
    name: str
    type: Literal["numeric"]
    scaling: Literal["zscore", "minmax"]
    mean: float
    std: float
    min: float
    max: float
    missing_indicator: bool

    @classmethod
    def read(cls, obj: dict[str, Any], where: str) -> NumericFeature:
        indicator = _field(obj, where, "missing_indicator")
        if type(indicator) is not bool:
            raise SpecError(f"{where}missing_indicator", "Input should be a boolean")
        return cls(
            name=_text(_field(obj, where, "name"), f"{where}name"),
            type="numeric",
            scaling=_choice(_field(obj, where, "scaling"), f"{where}scaling", ("zscore", "minmax")),
            mean=_number(_field(obj, where, "mean"), f"{where}mean"),
            std=_number(_field(obj, where, "std"), f"{where}std", ge=0),
            min=_number(_field(obj, where, "min"), f"{where}min"),
            max=_number(_field(obj, where, "max"), f"{where}max"),
            missing_indicator=indicator,
        )

    @property
    def width(self) -> int:
        return 2 if self.missing_indicator else 1


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    type: Literal["categorical"]
    vocabulary: list[str]

    @classmethod
    def read(cls, obj: dict[str, Any], where: str) -> CategoricalFeature:
        vocabulary = _field(obj, where, "vocabulary")
        if type(vocabulary) is not list:
            raise SpecError(f"{where}vocabulary", "Input should be a list of text")
        words = [_text(v, f"{where}vocabulary.{i}") for i, v in enumerate(vocabulary)]
        if len(set(words)) != len(words):
            raise SpecError(f"{where}vocabulary", "the vocabulary repeats a category")
        return cls(name=_text(_field(obj, where, "name"), f"{where}name"), type="categorical", vocabulary=words)

    @property
    def width(self) -> int:
        return len(self.vocabulary) + 1  # + the unseen slot


Label = bool | int | float | str
Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class TargetEncoding:
    type: Literal["binary", "multiclass", "regression"]
    labels: list[Label] | None = None
    mean: float | None = None
    std: float | None = None

    @classmethod
    def read(cls, obj: dict[str, Any], where: str) -> TargetEncoding:
        kind = _choice(_field(obj, where, "type"), f"{where}type", TASKS)
        mean, std, labels = (_field(obj, where, name, optional=True) for name in ("mean", "std", "labels"))
        mean = None if mean is None else _number(mean, f"{where}mean")
        std = None if std is None else _number(std, f"{where}std", ge=0)
        if labels is not None:
            if type(labels) is not list:
                raise SpecError(f"{where}labels", "Input should be a list")
            for i, label in enumerate(labels):
                if not isinstance(label, bool | int | float | str):
                    raise SpecError(f"{where}labels.{i}", "Input should be text, a number or a boolean")
            labels = list(labels)
        if kind == "regression":
            if mean is None or std is None:
                raise SpecError(where.rstrip(".") or "target_encoding", "a regression target needs its mean and std")
        elif labels is None or len(labels) < 2 or (kind == "binary" and len(labels) != 2):
            need = "2" if kind == "binary" else "at least 2"
            raise SpecError(where.rstrip(".") or "target_encoding", f"a {kind} target needs {need} labels")
        return cls(type=kind, labels=labels, mean=mean, std=std)


_FEATURE_KINDS: dict[str, Any] = {"numeric": NumericFeature, "categorical": CategoricalFeature}


@dataclass(frozen=True)
class PreprocessorSpec:
    version: Literal[1]
    task: Literal["binary", "multiclass", "regression"]
    target: str
    features: tuple[Feature, ...]
    target_encoding: TargetEncoding
    inputs: int
    outputs: int

    @classmethod
    def read(cls, value: Any) -> PreprocessorSpec:
        """The spec, or SpecError naming the first thing in it that is not the lab's."""
        obj = _object(value, "")
        _choice(_field(obj, "", "version"), "version", (1,))
        features = _field(obj, "", "features")
        if type(features) is not list or not features:
            raise SpecError("features", "Input should be a list of at least 1 feature")
        spec = cls(
            version=1,
            task=_choice(_field(obj, "", "task"), "task", TASKS),
            target=_text(_field(obj, "", "target"), "target"),
            features=tuple(_feature(f, f"features.{i}.") for i, f in enumerate(features)),
            target_encoding=TargetEncoding.read(
                _object(_field(obj, "", "target_encoding"), "target_encoding"), "target_encoding."
            ),
            inputs=_count(_field(obj, "", "inputs"), "inputs"),
            outputs=_count(_field(obj, "", "outputs"), "outputs"),
        )
        spec._check_consistent()
        return spec

    def _check_consistent(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise SpecError("features", "two features share a name")
        if self.target_encoding.type != self.task:
            raise SpecError("task", f"the target is encoded for {self.target_encoding.type}, the task is {self.task}")
        width = sum(f.width for f in self.features)
        if width != self.inputs:
            raise SpecError("inputs", f"the features make {width} inputs, the preprocessor says {self.inputs}")
        labels = self.target_encoding.labels
        expected = len(labels) if self.task == "multiclass" and labels else 1
        if self.outputs != expected:
            raise SpecError(
                "outputs", f"a {self.task} model with these labels has {expected} outputs, not {self.outputs}"
            )


def _feature(value: Any, where: str) -> Feature:
    obj = _object(value, where.rstrip("."))
    kind = _FEATURE_KINDS.get(_field(obj, where, "type")) if isinstance(obj.get("type"), str) else None
    if kind is None:
        raise SpecError(f"{where}type", "Input should be 'numeric' or 'categorical'")
    return cast("Feature", kind.read(obj, where))


@dataclass(frozen=True)
class FieldError:
    """One bad value: instance index, field (a feature name, or None for the instance itself), why."""

    instance: int
    field: str | None
    message: str

    def as_problem_error(self) -> dict[str, str]:
        where = f"instances.{self.instance}" + (f".{self.field}" if self.field is not None else "")
        return {"field": where, "message": self.message}


class InvalidInstances(ValueError):
    """Instances that cannot be encoded: every error found (the edge answers 422 with them)."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"instance {first.instance}" + (f", field {first.field!r}" if first.field is not None else "")
        super().__init__(f"{where}: {first.message}{more}")


def describe(value: Any) -> str:
    """The JSON type of a value, for an error message (the value itself is never echoed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Preprocessor:
    """A validated preprocessor: encode(instances) -> input rows, decode(output row) -> prediction."""

    def __init__(self, spec: PreprocessorSpec) -> None:
        self.spec = spec
        self.task = spec.task
        self.inputs = spec.inputs
        self.outputs = spec.outputs
        self.names = frozenset(f.name for f in spec.features)
        self._encoders = [
            (f.name, _numeric_encoder(f) if isinstance(f, NumericFeature) else _categorical_encoder(f))
            for f in spec.features
        ]

    @classmethod
    def from_metadata(cls, metadata: Any) -> Preprocessor:
        if not isinstance(metadata, dict) or "preprocessor" not in metadata:
            raise ModelError("model.json has no preprocessing (userDefinedMetadata.preprocessor): save it from the lab")
        try:
            return cls(PreprocessorSpec.read(metadata["preprocessor"]))
        except SpecError as exc:
            raise ModelError(f"model.json's preprocessor is not the lab's: {exc}") from None

    def feature_list(self) -> list[dict[str, Any]]:
        """What an instance takes: [{name, type, values?}] (the categories, without the missing one)."""
        out: list[dict[str, Any]] = []
        for f in self.spec.features:
            if isinstance(f, CategoricalFeature):
                out.append({"name": f.name, "type": f.type, "values": [v for v in f.vocabulary if v != cells.MISSING]})
            else:
                out.append({"name": f.name, "type": f.type})
        return out

    # --- encoding ----------------------------------------------------------------------------------

    def encode(self, instances: Sequence[Any], start: int = 0) -> list[list[float]]:
        """Raw instances ({feature: value}) -> the model's input rows; InvalidInstances lists every
        bad instance and field (an unknown feature, a missing one, a value of the wrong type).
        `start` is the index of the first instance, for the errors."""
        rows: list[list[float]] = []
        errors: list[FieldError] = []
        for i, instance in enumerate(instances, start):
            row, problems = self._encode_one(i, instance)
            if problems:
                errors.extend(problems)
            else:
                rows.append(row)
        if errors:
            raise InvalidInstances(errors)
        return rows

    def _encode_one(self, i: int, instance: Any) -> tuple[list[float], list[FieldError]]:
        if type(instance) is not dict:
            return [], [FieldError(i, None, f"an instance is an object of feature values, not {describe(instance)}")]
        problems = []
        if not self.names.issuperset(instance):
            problems = [
                FieldError(i, name, "this model has no such feature") for name in instance if name not in self.names
            ]
        row: list[float] = []
        for name, encode in self._encoders:
            try:
                raw = instance[name]
            except KeyError:
                problems.append(FieldError(i, name, "missing: send a value, or null for a missing value"))
                continue
            message = encode(raw, row)
            if message:
                problems.append(FieldError(i, name, message))
        return row, problems

    # --- decoding ----------------------------------------------------------------------------------

    def decode(self, output: Sequence[float]) -> dict[str, Any]:
        """One output row -> {"value"} (regression) or {"label", "probabilities": [{label, p}]}."""
        enc = self.spec.target_encoding
        if enc.type == "regression":
            assert enc.mean is not None and enc.std is not None  # checked when read
            return {"value": float(output[0]) * (enc.std or 1.0) + enc.mean}
        labels = enc.labels or []
        if enc.type == "binary":
            p = min(max(float(output[0]), 0.0), 1.0)
            return {
                "label": labels[1 if p >= 0.5 else 0],
                "probabilities": [{"label": labels[0], "p": 1.0 - p}, {"label": labels[1], "p": p}],
            }
        best = 0
        for j in range(1, len(labels)):
            if output[j] > output[best]:
                best = j
        return {
            "label": labels[best],
            "probabilities": [{"label": lab, "p": float(output[j])} for j, lab in enumerate(labels)],
        }


# --- one encoder per feature (data.js encodeFeatures), with fast paths for the common JSON types -------

Encoder = Callable[[Any, list[float]], str | None]  # (raw value, row to extend) -> an error message or None
ONE_HOT_TABLE = 256  # categorical features up to this width keep a ready one-hot row per slot
CACHED_TEXT = 64  # category text up to this length is remembered per feature (repeated values read once)
CACHE_SIZE = 4096


def _numeric_encoder(f: NumericFeature) -> Encoder:
    minmax, lo, span, mean, std, indicator = (
        f.scaling == "minmax",
        f.min,
        f.max - f.min,
        f.mean,
        f.std,
        f.missing_indicator,
    )

    def encode(raw: Any, out: list[float]) -> str | None:
        kind = type(raw)
        if kind is float or kind is int:  # a JSON number (a bool's type is bool)
            x = raw if kind is float else cells.as_float(raw)
            if x - x != 0.0:
                return "must be a finite number"
            missing = False
        else:
            v = cells.normalize(raw)
            if v is None:
                x, missing = mean, True
            elif type(v) is float:  # text that reads as a number
                x, missing = v, False
            elif kind is str and cells.NUMBER.fullmatch(v):
                return f"must be a number within ±{cells.MAX_SAFE_INTEGER} when sent as text (send a JSON number)"
            else:
                return f"must be a number (or null for a missing value), not {describe(raw)}"
        scaled = ((x - lo) / span if span > 0 else 0.0) if minmax else ((x - mean) / std if std > 0 else 0.0)
        if not abs(scaled) <= FLOAT32_MAX:
            return "is too large for this model: scaled, it is beyond the range of a 32-bit float"
        out.append(scaled)
        if indicator:
            out.append(1.0 if missing else 0.0)
        return None

    return encode


def _categorical_encoder(f: CategoricalFeature) -> Encoder:
    index = {k: i for i, k in enumerate(f.vocabulary)}
    width, unseen = f.width, len(f.vocabulary)
    table = (
        [tuple(1.0 if j == k else 0.0 for j in range(width)) for k in range(width)] if width <= ONE_HOT_TABLE else None
    )
    zeros = [0.0] * width
    seen: dict[Any, int] = {}  # raw text or number -> slot; bools never enter (True == 1)

    def encode(raw: Any, out: list[float]) -> str | None:
        kind = type(raw)
        if kind is str or kind is float or kind is int:
            at = seen.get(raw)
            if at is None:
                at = index.get(cells.key(cells.normalize(raw)), unseen)
                if len(seen) < CACHE_SIZE and (kind is not str or len(raw) <= CACHED_TEXT):
                    seen[raw] = at
        elif raw is None or kind is bool:
            at = index.get(cells.key(raw), unseen)
        else:
            return f"must be a category (text, a number or a boolean, or null), not {describe(raw)}"
        if table is not None:
            out.extend(table[at])
        else:
            out.extend(zeros)
            out[len(out) - width + at] = 1.0
        return None

    return encode


def finite_row(row: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in row)
