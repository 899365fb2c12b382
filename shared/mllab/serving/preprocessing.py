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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import cells
from .errors import ModelError

TASKS = ("binary", "multiclass", "regression")
FLOAT32_MAX = 3.4028234663852886e38  # TF.js feeds the model float32: a larger input becomes infinity
MAX_REPORTED = 20  # field errors listed in one answer; the detail counts the rest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NumericFeature(_Strict):
    name: str
    type: Literal["numeric"]
    scaling: Literal["zscore", "minmax"]
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(ge=0, allow_inf_nan=False)
    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)
    missing_indicator: bool

    @property
    def width(self) -> int:
        return 2 if self.missing_indicator else 1


class CategoricalFeature(_Strict):
    name: str
    type: Literal["categorical"]
    vocabulary: list[str]

    @field_validator("vocabulary")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("the vocabulary repeats a category")
        return v

    @property
    def width(self) -> int:
        return len(self.vocabulary) + 1  # + the unseen slot


Label = bool | int | float | str


class TargetEncoding(_Strict):
    type: Literal["binary", "multiclass", "regression"]
    labels: list[Label] | None = None
    mean: float | None = Field(default=None, allow_inf_nan=False)
    std: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _complete(self) -> TargetEncoding:
        if self.type == "regression":
            if self.mean is None or self.std is None:
                raise ValueError("a regression target needs its mean and std")
        elif self.labels is None or len(self.labels) < 2 or (self.type == "binary" and len(self.labels) != 2):
            raise ValueError(f"a {self.type} target needs {'2' if self.type == 'binary' else 'at least 2'} labels")
        return self


class PreprocessorSpec(_Strict):
    version: Literal[1]
    task: Literal["binary", "multiclass", "regression"]
    target: str
    features: list[Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]] = Field(min_length=1)
    target_encoding: TargetEncoding
    inputs: int = Field(ge=1)
    outputs: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessorSpec:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("two features share a name")
        if self.target_encoding.type != self.task:
            raise ValueError(f"the target is encoded for {self.target_encoding.type}, the task is {self.task}")
        width = sum(f.width for f in self.features)
        if width != self.inputs:
            raise ValueError(f"the features make {width} inputs, the preprocessor says {self.inputs}")
        labels = self.target_encoding.labels
        expected = len(labels) if self.task == "multiclass" and labels else 1
        if self.outputs != expected:
            raise ValueError(f"a {self.task} model with these labels has {expected} outputs, not {self.outputs}")
        return self


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


def _describe(value: Any) -> str:
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
            return cls(PreprocessorSpec.model_validate(metadata["preprocessor"]))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "(preprocessor)"
            raise ModelError(f"model.json's preprocessor is not the lab's: {where}: {first.get('msg')}") from None

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
            return [], [FieldError(i, None, f"an instance is an object of feature values, not {_describe(instance)}")]
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
                return f"must be a number (or null for a missing value), not {_describe(raw)}"
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
            return f"must be a category (text, a number or a boolean, or null), not {_describe(raw)}"
        if table is not None:
            out.extend(table[at])
        else:
            out.extend(zeros)
            out[len(out) - width + at] = 1.0
        return None

    return encode


def finite_row(row: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in row)
