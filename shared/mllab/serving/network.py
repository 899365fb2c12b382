"""The lab's networks on the CPU without TensorFlow: a TF.js layers model (model.json's
`modelTopology` + `weightsManifest`, weights.bin's little-endian float32 values) read strictly into
Dense layers, and their forward pass.

The lab builds one shape only (frontend/js/model.js buildModel): a Sequential stack of Dense layers,
each `activation(x @ kernel + bias)`, with the activations below. They follow TF.js's CPU kernels
(tfjs-backend-cpu): sigmoid 1/(1+e^-x), elu and selu with alpha 1 and SELU's constants, swish
x*sigmoid(x), softplus with TF.js's float32 cut-offs, softmax with the max subtracted.

Two implementations, measured in tests/bench/predict_bench.py: numpy, and plain Python for small
requests until numpy is first needed (so a cold start's first single prediction does not pay numpy's
import). Inputs are rounded to float32 (TF.js feeds the model a float32 tensor),
the arithmetic is float64, and the outputs are rounded to float32 (TF.js's dataSync returns them so):
the two agree with each other to ~1e-12 and with TF.js to ~1e-6."""

from __future__ import annotations

import math
import operator
import os
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "swish", "softplus", "linear", "softmax")
MAX_LAYERS = 9  # the lab's 8 hidden layers (model.js LIMITS.layers) + the output layer
MAX_UNITS = 1024  # model.js LIMITS.units; also caps a multiclass output layer
SELU_SCALE = 1.0507009873554804934193349852946  # tfjs-core selu_util
SELU_SCALE_ALPHA = 1.7580993408473768599402175208123
_SOFTPLUS_CUT = math.log(1.1920928955078125e-7) + 2.0  # tfjs-backend-cpu Softplus: below, e^x; above -cut, x

# Plain Python only spares a cold start numpy's import (~96 ms of CPU); once numpy is loaded it is
# faster at every size (the 3x64 network: 0.14 ms vs 0.02 ms for one instance, 2.3 ms for 1,000).
# So: plain Python while numpy is not loaded and a request needs at most this many multiply-adds
# (~0.5 ms of plain Python) on a model this small; numpy otherwise. tests/bench/predict_bench.py.
PYTHON_MAX_MACS = 40_000
PYTHON_MAX_PARAMS = 40_000
CHUNK_VALUES = 1 << 20  # numpy works on at most this many values per layer at once (8 MB of float64)

_sumprod: Callable[[Sequence[float], Sequence[float]], float] = getattr(
    math, "sumprod", lambda a, b: sum(map(operator.mul, a, b))
)  # math.sumprod is Python 3.12+


@dataclass(frozen=True)
class Dense:
    """One Dense layer: kernel [inputs x units] row-major, bias [units] (zeros when use_bias is off)."""

    inputs: int
    units: int
    activation: str
    kernel: array  # float32
    bias: array  # float32


@dataclass
class Network:
    layers: tuple[Dense, ...]
    _py: list[tuple[list[list[float]], list[float], str]] | None = field(default=None, repr=False)
    _np: list[tuple[Any, Any, str]] | None = field(default=None, repr=False)

    @property
    def inputs(self) -> int:
        return self.layers[0].inputs

    @property
    def outputs(self) -> int:
        return self.layers[-1].units

    @property
    def params(self) -> int:
        """Multiply-adds per instance (the kernels' sizes)."""
        return sum(d.inputs * d.units for d in self.layers)

    @property
    def widest(self) -> int:
        return max([self.inputs, *(d.units for d in self.layers)])

    def forward(self, rows: Sequence[Sequence[float]]) -> list[list[float]]:
        """Input rows -> output rows, by plain Python or numpy (the same results to ~1e-12)."""
        small = self.params <= PYTHON_MAX_PARAMS and len(rows) * self.params <= PYTHON_MAX_MACS
        if small and "numpy" not in sys.modules:
            return self.forward_python(rows)
        return self.forward_numpy(rows)

    # --- plain Python ------------------------------------------------------------------------------

    def forward_python(self, rows: Sequence[Sequence[float]]) -> list[list[float]]:
        if self._py is None:
            self._py = [(_columns(d), d.bias.tolist(), d.activation) for d in self.layers]
        out = []
        for row in rows:
            h: list[float] = array("f", row).tolist()
            for columns, bias, act in self._py:
                h = _ACT_PY[act]([b + _sumprod(h, col) for col, b in zip(columns, bias, strict=True)])
            out.append(array("f", h).tolist())
        return out

    # --- numpy -------------------------------------------------------------------------------------

    def forward_numpy(self, rows: Sequence[Sequence[float]]) -> list[list[float]]:
        np = _numpy()
        if self._np is None:
            self._np = [
                (
                    np.frombuffer(d.kernel, dtype=np.float32).astype(np.float64).reshape(d.inputs, d.units),
                    np.frombuffer(d.bias, dtype=np.float32).astype(np.float64),
                    d.activation,
                )
                for d in self.layers
            ]
        step = max(1, CHUNK_VALUES // self.widest)
        out: list[list[float]] = []
        with np.errstate(all="ignore"):  # overflow gives inf/nan, reported per row by the caller
            for start in range(0, len(rows), step):
                h = np.asarray(rows[start : start + step], dtype=np.float32).astype(np.float64)
                for kernel, bias, act in self._np:
                    h = _ACT_NP[act](np, h @ kernel + bias)
                out.extend(h.astype(np.float32).astype(np.float64).tolist())
        return out


def _numpy() -> Any:
    """numpy, imported when a request first needs it (100-200 ms of a cold start). Its BLAS runs on
    one thread: these matrices are small, a function instance has one or two vCPUs and serves
    concurrent requests, and BLAS threads spinning against each other made a 1,000 x 64 product
    take 8 ms instead of 0.06 ms (tests/bench/predict_bench.py)."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy

    return numpy


def _columns(d: Dense) -> list[list[float]]:
    flat = d.kernel.tolist()
    return [flat[j :: d.units] for j in range(d.units)]


# --- activations (TF.js's CPU kernels) ---------------------------------------------------------------


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # 1/(1+e^-x) would overflow e^-x for x < -709
    return e / (1.0 + e)


def _softplus(x: float) -> float:
    if x < _SOFTPLUS_CUT:
        return math.exp(x)
    if x > -_SOFTPLUS_CUT:
        return x
    return math.log(1.0 + math.exp(x))


def _softmax(h: list[float]) -> list[float]:
    top = max(h)
    if not math.isfinite(top):
        return [math.nan] * len(h)
    e = [math.exp(v - top) for v in h]
    s = sum(e)
    return [v / s for v in e]


def _elu(x: float) -> float:
    return x if x >= 0 else math.exp(x) - 1.0


def _selu(x: float) -> float:
    return SELU_SCALE * x if x >= 0 else SELU_SCALE_ALPHA * (math.exp(x) - 1.0)


def _nan_safe(f: Callable[[float], float]) -> Callable[[list[float]], list[float]]:
    return lambda h: [f(v) if v == v else v for v in h]  # nan passes through, as in TF.js


_ACT_PY: dict[str, Callable[[list[float]], list[float]]] = {
    "linear": lambda h: h,
    "relu": lambda h: [0.0 if v < 0 else v for v in h],
    "tanh": lambda h: [math.tanh(v) for v in h],
    "sigmoid": _nan_safe(_sigmoid),
    "elu": _nan_safe(_elu),
    "selu": _nan_safe(_selu),
    "swish": _nan_safe(lambda v: v * _sigmoid(v)),
    "softplus": _nan_safe(_softplus),
    "softmax": _softmax,
}


def _np_sigmoid(np: Any, h: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-h))


def _np_softplus(np: Any, h: Any) -> Any:
    out = np.log1p(np.exp(np.minimum(h, -_SOFTPLUS_CUT)))  # the middle; the ends are overwritten below
    small, large = h < _SOFTPLUS_CUT, h > -_SOFTPLUS_CUT
    out[small] = np.exp(h[small])
    out[large] = h[large]
    return out


def _np_softmax(np: Any, h: Any) -> Any:
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


_ACT_NP: dict[str, Callable[[Any, Any], Any]] = {
    "linear": lambda np, h: h,
    "relu": lambda np, h: np.maximum(h, 0.0),
    "tanh": lambda np, h: np.tanh(h),
    "sigmoid": _np_sigmoid,
    # x for x >= 0, e^x - 1 below: max(x, 0) + expm1(min(x, 0)) is exactly that on both sides
    "elu": lambda np, h: np.maximum(h, 0.0) + np.expm1(np.minimum(h, 0.0)),
    "selu": lambda np, h: SELU_SCALE * np.maximum(h, 0.0) + SELU_SCALE_ALPHA * np.expm1(np.minimum(h, 0.0)),
    "swish": lambda np, h: h * _np_sigmoid(np, h),
    "softplus": _np_softplus,
    "softmax": _np_softmax,
}


# --- reading model.json + weights.bin ------------------------------------------------------------------


def _layer_configs(topology: Any) -> list[dict[str, Any]]:
    if isinstance(topology, dict) and "model_config" in topology:  # a Keras-converted model.json
        topology = topology["model_config"]
    if not isinstance(topology, dict) or topology.get("class_name") != "Sequential":
        raise ModelError("model.json's modelTopology is not a Sequential model (the lab saves Sequential models)")
    config = topology.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(layers, list) or not layers:
        raise ModelError("model.json's Sequential model lists no layers")
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise ModelError(f"layer {i} of model.json is not a layer description")
        kind = layer.get("class_name")
        if kind == "InputLayer":
            continue
        if kind != "Dense":
            raise ModelError(f"layer {i} is a {str(kind)[:40]!r}; the lab's models have Dense layers only")
        out.append(layer["config"])
    if not out or len(out) > MAX_LAYERS:
        raise ModelError(f"the model has {len(out)} Dense layers; the lab builds 1 to {MAX_LAYERS}")
    return out


def _dense_shape(i: int, cfg: dict[str, Any]) -> tuple[int, str, bool]:
    units, act, bias = cfg.get("units"), cfg.get("activation", "linear"), cfg.get("use_bias", True)
    if type(units) is not int or not 1 <= units <= MAX_UNITS:
        raise ModelError(f"Dense layer {i} has {units!r:.20} units; the lab uses 1 to {MAX_UNITS}")
    if act not in ACTIVATIONS:
        raise ModelError(
            f"Dense layer {i}'s activation {str(act)[:40]!r} is not one of the lab's: {', '.join(ACTIVATIONS)}"
        )
    if type(bias) is not bool:
        raise ModelError(f"Dense layer {i}'s use_bias is not true or false")
    return units, act, bias


def _weight_specs(manifest: Any) -> list[tuple[str, list[int]]]:
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise ModelError("model.json's weightsManifest must be one group (the lab writes one weights.bin)")
    group = manifest[0]
    if group.get("paths") != ["weights.bin"]:
        raise ModelError('model.json\'s weightsManifest must list exactly the path "weights.bin"')
    specs = group.get("weights")
    if not isinstance(specs, list):
        raise ModelError("model.json's weightsManifest has no weights list")
    out = []
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ModelError("a weight in model.json's weightsManifest has no name")
        if spec.get("dtype", "float32") != "float32" or "quantization" in spec:
            raise ModelError(f"weight {spec['name'][:80]!r} is not float32 (quantized weights are not served)")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ModelError(f"weight {spec['name'][:80]!r} has no valid shape")
        out.append((spec["name"], shape))
    return out


def load(topology: Any, manifest: Any, weights: bytes) -> Network:
    """A Network from model.json's modelTopology and weightsManifest and weights.bin's bytes;
    ModelError says what does not fit (layer types, activations, shapes, sizes, non-finite weights)."""
    configs = _layer_configs(topology)
    specs = _weight_specs(manifest)
    expected = sum(2 if _dense_shape(i, c)[2] else 1 for i, c in enumerate(configs))
    if len(specs) != expected:
        raise ModelError(f"model.json lists {len(specs)} weights; its {len(configs)} Dense layers need {expected}")
    total = sum(math.prod(shape) for _, shape in specs)
    if len(weights) != 4 * total:
        raise ModelError(f"weights.bin holds {len(weights)} bytes; model.json's weights need {4 * total}")
    values = array("f")
    values.frombytes(weights)
    if sys.byteorder != "little":
        values.byteswap()
    if not all(map(math.isfinite, values)):
        raise ModelError("weights.bin holds non-finite weights (the training diverged): retrain and save again")
    layers: list[Dense] = []
    at = 0
    spec_i = 0
    width: int | None = None
    for i, cfg in enumerate(configs):
        units, act, use_bias = _dense_shape(i, cfg)
        name, shape = specs[spec_i]
        if len(shape) != 2 or shape[1] != units or (width is not None and shape[0] != width) or shape[0] < 1:
            raise ModelError(f"weight {name[:80]!r} has shape {shape}; Dense layer {i} needs [{width or 'n'}, {units}]")
        inputs = shape[0]
        kernel = values[at : at + inputs * units]
        at += inputs * units
        spec_i += 1
        if use_bias:
            name, shape = specs[spec_i]
            if shape != [units]:
                raise ModelError(f"weight {name[:80]!r} has shape {shape}; Dense layer {i}'s bias needs [{units}]")
            bias = values[at : at + units]
            at += units
            spec_i += 1
        else:
            bias = array("f", bytes(4 * units))
        layers.append(Dense(inputs, units, act, kernel, bias))
        width = units
    _check_input_shape(configs[0], layers[0].inputs)
    return Network(tuple(layers))


def _check_input_shape(first: dict[str, Any], inputs: int) -> None:
    shape = first.get("batch_input_shape") or first.get("batchInputShape")
    if shape is not None and (not isinstance(shape, list) or len(shape) != 2 or shape[1] != inputs):
        raise ModelError(f"the first Dense layer takes {str(shape)[:40]} but its kernel has {inputs} inputs")
