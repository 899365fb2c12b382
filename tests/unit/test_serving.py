"""Server-side inference (mllab.serving): raw cells read as the lab reads them, the lab's saved files
predicting what TF.js predicted, bad instances answered 422 naming the instance and the field, the
two implementations agreeing on every activation, the largest model the lab can save, and model
files that are not the lab's refused with a reason."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllab.platform import config
from mllab.platform.problems import Problem
from mllab.serving import cells, network
from mllab.serving.errors import ModelError
from mllab.serving.predictor import MAX_INSTANCES, MAX_MACS, Model

from .serving_support import categorical, edited, files, golden, numeric

# --- cells, as the page reads them ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "javascript"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (300.0, "300"),
        (-3.25, "-3.25"),
        (2.5, "2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-6, "0.000001"),
        (1.5e-6, "0.0000015"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e21, "1e+21"),
        (1.25e21, "1.25e+21"),
        (float(2**53 + 2), "9007199254740994"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_numbers_are_spelled_as_javascript_spells_them(value: float, javascript: str) -> None:
    assert cells.js_number_text(value) == javascript


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_spelled_number_reads_back_as_the_same_number(value: float) -> None:
    assert float(cells.js_number_text(value)) == value


@pytest.mark.parametrize(
    ("raw", "read"),
    [
        ("  3.50 ", 3.5),
        ("+5", 5.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("-1e3", -1000.0),
        ("NA", None),
        (" n/a ", None),
        ("", None),
        ("?", None),
        ("NULL", None),
        ("TRUE", True),
        (" false", False),
        ("1e20", "1e20"),  # beyond the safe integers: text, as Papa Parse's dynamic typing leaves it
        ("\ufeff5", 5.0),  # JavaScript's trim() removes a byte-order mark
        ("\x1c5", "\x1c5"),  # ...and not the separators Python's strip() would remove
        ("\u0663", "\u0663"),  # an Arabic-Indic digit is not a number to JavaScript's \d
        ("Paris", "Paris"),
        (7, 7),
        (float("inf"), None),
        (10**400, None),
        (None, None),
    ],
)
def test_raw_cells_are_read_as_the_page_reads_them(raw, read) -> None:
    assert cells.normalize(raw) == read and type(cells.normalize(raw)) is type(read)


def test_categories_are_the_pages_keys() -> None:
    assert [cells.key(cells.normalize(v)) for v in (None, "", True, "True", 3, 3.0, "3", "1e-7", "a")] == [
        "__missing__", "__missing__", "true", "true", "3", "3", "3", "1e-7", "a",
    ]  # fmt: skip


# --- the lab's own files -----------------------------------------------------------------------------


def test_the_labs_saved_model_predicts_what_tfjs_predicted() -> None:
    model_json, weights, recorded = golden()
    model = Model.from_files(model_json, weights)
    ours = model.predict(recorded["rows"])
    for row, mine, theirs in zip(recorded["rows"], ours, recorded["predictions"], strict=True):
        assert mine["label"] == theirs["label"], row
        for a, b in zip(mine["probabilities"], theirs["probabilities"], strict=True):
            assert a["label"] == b["label"] and abs(a["p"] - b["p"]) <= 1e-5, row


def test_a_model_lists_the_features_an_instance_takes() -> None:
    model = Model.from_files(*golden()[:2])
    assert model.preprocessor.feature_list() == [
        {"name": "tenure", "type": "numeric"},
        {"name": "monthly", "type": "numeric"},
        {"name": "plan", "type": "categorical", "values": ["basic", "pro", "team"]},
        {"name": "code", "type": "categorical", "values": ["1", "1e-7", "2.5", "300", "a", "b"]},
    ]


# --- predictions ---------------------------------------------------------------------------------


FEATURES = [
    numeric("age", mean=40, std=10, missing_indicator=True),
    categorical("city", ["Lyon", "Paris", "__missing__"]),
]


def model(task: str = "binary", hidden=((8, "relu"),), features=FEATURES, **kw) -> Model:
    return Model.from_files(*files(features, list(hidden), task, **kw))


def test_binary_gives_the_label_and_each_class_probability() -> None:
    [p] = model("binary", labels=["no", "yes"]).predict([{"age": 30, "city": "Paris"}])
    assert [c["label"] for c in p["probabilities"]] == ["no", "yes"]
    assert math.isclose(sum(c["p"] for c in p["probabilities"]), 1.0)
    assert p["label"] == ("yes" if p["probabilities"][1]["p"] >= 0.5 else "no")


def test_multiclass_labels_keep_their_types() -> None:
    [p] = model("multiclass", labels=[0, 1, 2.5, True]).predict([{"age": "31", "city": None}])
    assert [c["label"] for c in p["probabilities"]] == [0, 1, 2.5, True]
    assert math.isclose(sum(c["p"] for c in p["probabilities"]), 1.0, rel_tol=1e-6)
    best = max(p["probabilities"], key=lambda c: c["p"])
    assert p["label"] == best["label"]


def test_regression_answers_in_the_targets_units() -> None:
    m = model("regression")
    [p] = m.predict([{"age": 50, "city": "Lyon"}])
    [output] = m.network.forward(m.preprocessor.encode([{"age": 50, "city": "Lyon"}]))
    assert p == {"value": pytest.approx(output[0] * 10.0 + 40.0)}  # the preprocessor's target mean 40, std 10


def test_missing_values_are_imputed_and_unseen_categories_share_a_slot() -> None:
    m = model()
    rows = m.preprocessor.encode(
        [{"age": None, "city": "Rome"}, {"age": "NA", "city": "Nice"}, {"age": 40, "city": ""}]
    )
    #            age (z)  age missing   Lyon Paris __missing__ __unseen__
    assert rows == [[0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]


def test_min_max_scaling_and_constant_columns() -> None:
    features = [
        numeric("a", lo=10, hi=20, scaling="minmax"),
        numeric("b", std=0.0),
        numeric("c", lo=5, hi=5, scaling="minmax"),
    ]
    m = model(features=features)
    assert m.preprocessor.encode([{"a": 15, "b": 123, "c": 99}]) == [[0.5, 0.0, 0.0]]


# --- bad instances: 422 naming the instance and the field ---------------------------------------------


def problem_of(m: Model, instances) -> Problem:
    with pytest.raises(Problem) as caught:
        m.predict(instances)
    return caught.value


@pytest.mark.parametrize(
    ("instance", "field", "says"),
    [
        ({"age": 30, "city": "Lyon", "income": 1}, "income", "no such feature"),
        ({"age": 30}, "city", "missing"),
        ({"age": True, "city": "Lyon"}, "age", "must be a number"),
        ({"age": "thirty", "city": "Lyon"}, "age", "must be a number"),
        ({"age": [30], "city": "Lyon"}, "age", "must be a number"),
        ({"age": "1e20", "city": "Lyon"}, "age", "send a JSON number"),
        ({"age": 1e300, "city": "Lyon"}, "age", "too large for this model"),
        ({"age": float("inf"), "city": "Lyon"}, "age", "must be a finite number"),  # JSON's 1e400
        ({"age": 10**400, "city": "Lyon"}, "age", "must be a finite number"),
        ({"age": 30, "city": {"name": "Lyon"}}, "city", "must be a category"),
        ({"age": 30, "city": [[[[["Lyon"]]]]]}, "city", "must be a category"),
    ],
)
def test_a_bad_value_is_named_by_instance_and_field(instance: dict, field: str, says: str) -> None:
    good = {"age": 30, "city": "Lyon"}
    problem = problem_of(model(), [good, good, instance])
    assert problem.status == 422
    assert problem.errors is not None and problem.errors[0]["field"] == f"instances.2.{field}"
    assert says in problem.errors[0]["message"] and says in problem.detail
    assert "instance 2" in problem.detail


def test_an_instance_must_be_an_object() -> None:
    problem = problem_of(model(), [["age", 30]])
    assert problem.status == 422 and problem.errors == [
        {"field": "instances.0", "message": "an instance is an object of feature values, not a list"}
    ]


def test_every_bad_instance_is_listed_up_to_twenty() -> None:
    problem = problem_of(model(), [{"age": 1, "city": "Lyon"}] + [{"age": "x"}] * 30)
    assert problem.errors is not None and len(problem.errors) == 20
    assert problem.errors[:2] == [
        {"field": "instances.1.age", "message": "must be a number (or null for a missing value), not text"},
        {"field": "instances.1.city", "message": "missing: send a value, or null for a missing value"},
    ]
    assert "(and 59 more)" in problem.detail


def test_a_value_that_overflows_the_network_is_named_by_instance() -> None:
    m = model("regression", features=[numeric("x", std=1e-30)], hidden=((4, "linear"),), scale=1e30)
    problem = problem_of(m, [{"x": 0}, {"x": 1e5}])
    assert problem.status == 422 and [e["field"] for e in problem.errors or []] == ["instances.1"]


def test_instance_counts_are_bounded() -> None:
    m = model()
    assert problem_of(m, []).status == 422
    assert problem_of(m, [{"age": 1, "city": "Lyon"}] * (MAX_INSTANCES + 1)).status == 413
    assert len(m.predict([{"age": 1, "city": "Lyon"}] * MAX_INSTANCES)) == MAX_INSTANCES


def test_values_are_never_echoed_in_errors() -> None:
    problem = problem_of(model(), [{"age": "secret-value-123", "city": "Lyon", "secret-key": 1}])
    assert "secret-value-123" not in json.dumps(problem.errors) + problem.detail


# --- the network: both implementations, every activation --------------------------------------------


@pytest.mark.parametrize("activation", [a for a in network.ACTIVATIONS if a != "softmax"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_python_and_numpy_agree(activation: str, task: str) -> None:
    m = model(task, hidden=((16, activation), (8, activation)), features=[numeric(f"x{i}") for i in range(5)], seed=3)
    rows = [[(-1) ** i * 10.0 ** (j % 4 - 1) * (i + 1) for i in range(5)] for j in range(40)]
    rows += [[800.0] * 5, [-800.0] * 5]  # e^x overflows a double beyond 709: the activations must not
    py, np_ = m.network.forward_python(rows), m.network.forward_numpy(rows)
    for a, b in zip(py, np_, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_activations_follow_tfjs_kernels() -> None:
    act = network._ACT_PY
    assert act["relu"]([-2.0, 0.0, 3.0]) == [0.0, 0.0, 3.0]
    assert act["elu"]([-1.0, 2.0]) == [math.exp(-1.0) - 1.0, 2.0]
    assert act["selu"]([1.0])[0] == pytest.approx(1.0507009873554805)
    assert act["selu"]([-1.0])[0] == pytest.approx(1.7580993408473769 * (math.exp(-1.0) - 1.0))
    assert act["swish"]([1.0])[0] == pytest.approx(1.0 / (1.0 + math.exp(-1.0)))
    # softplus: TF.js's float32 cut-offs at log(2^-23) + 2 ~ -13.94 (e^x below, x above its negation)
    assert act["softplus"]([-14.0, 14.0, 0.0]) == [math.exp(-14.0), 14.0, math.log(2.0)]
    assert act["sigmoid"]([-1000.0, 1000.0]) == [0.0, 1.0]
    assert sum(act["softmax"]([1000.0, 999.0, -1000.0])) == pytest.approx(1.0)


def test_the_largest_model_the_lab_saves_is_served_in_bounded_work() -> None:
    # 8 hidden layers of 1,024 units on 2,000 inputs: 9.4M weights, 37.7 MB of weights.bin
    m = model(features=[numeric(f"x{i}") for i in range(2000)], hidden=[(1024, "relu")] * 8)
    assert len(m.network.layers) == 9 and m.network.params == 2000 * 1024 + 7 * 1024 * 1024 + 1024
    assert m.max_instances == MAX_MACS // m.network.params == 106
    instance = {f"x{i}": i / 1000 for i in range(2000)}
    assert len(m.predict([instance] * m.max_instances)) == 106
    assert problem_of(m, [instance] * 107).status == 413


# --- model files that are not the lab's ------------------------------------------------------------


def lab_files() -> tuple[bytes, bytes]:
    return files(FEATURES, [(8, "relu")])


def refused(model_json: bytes, weights: bytes) -> str:
    with pytest.raises(ModelError) as caught:
        Model.from_files(model_json, weights)
    return str(caught.value)


def layer(doc: dict, i: int) -> dict:
    return doc["modelTopology"]["config"]["layers"][i]["config"]


def layers(doc: dict) -> list:
    return doc["modelTopology"]["config"]["layers"]


def pre(doc: dict) -> dict:
    return doc["userDefinedMetadata"]["preprocessor"]


def weight(doc: dict, i: int) -> dict:
    return doc["weightsManifest"][0]["weights"][i]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.pop("modelTopology"), "not a TF.js layers model"),
        (lambda d: d["modelTopology"].update(class_name="Functional"), "not a Sequential model"),
        (lambda d: d["modelTopology"]["config"].update(layers=[]), "lists no layers"),
        (lambda d: layers(d)[0].update(class_name="Conv2D"), "Dense layers only"),
        (lambda d: layer(d, 0).update(activation="gelu"), "activation 'gelu' is not one of the lab's"),
        (lambda d: layer(d, 0).update(units=0), "units"),
        (lambda d: layer(d, 0).update(units="8"), "units"),
        (lambda d: layer(d, 0).update(units=5000), "units"),
        (lambda d: layer(d, 0).update(use_bias="yes"), "use_bias"),
        (lambda d: layer(d, 0).update(batch_input_shape=[None, 99]), "kernel has 6 inputs"),
        (lambda d: layers(d).extend(layers(d)[-1:] * 9), "Dense layers; the lab builds 1 to 9"),
        (lambda d: d["weightsManifest"].append(d["weightsManifest"][0]), "must be one group"),
        (lambda d: d["weightsManifest"][0].update(paths=["../../other/weights.bin"]), 'exactly the path "weights.bin"'),
        (lambda d: weight(d, 0).update(dtype="float16"), "is not float32"),
        (lambda d: weight(d, 0).update(quantization={"dtype": "uint8"}), "is not float32"),
        (lambda d: weight(d, 0).update(shape=[6, "8"]), "has no valid shape"),
        (lambda d: d["weightsManifest"][0]["weights"].pop(), "lists 3 weights"),
        (lambda d: weight(d, 0).update(shape=[8, 6]), "Dense layer 0 needs [n, 8]"),
        (lambda d: weight(d, 1).update(shape=[2, 4]), "has shape [2, 4]; Dense layer 0's bias needs [8]"),
        (lambda d: d.pop("userDefinedMetadata"), "has no preprocessing"),
        (lambda d: pre(d).update(inputs=7), "the features make 6 inputs"),
        (lambda d: pre(d)["features"][0].update(scaling="robust"), "features.0"),
        (lambda d: pre(d)["features"][0].update(mean=None), "features.0"),
        (lambda d: pre(d)["features"][1].update(vocabulary=["a", "a", "b"]), "repeats"),
        (lambda d: pre(d)["target_encoding"].update(labels=["a", "b", "c"]), "2 labels"),
        (lambda d: pre(d).update(task="regression"), "the task is regression"),
        (lambda d: pre(d).update(version=2), "version"),
    ],
)  # fmt: skip
def test_model_files_that_are_not_the_labs_are_refused_with_a_reason(edit, says: str) -> None:
    model_json, weights = lab_files()
    assert says in refused(edited(model_json, edit), weights)


@pytest.mark.parametrize(
    ("model_json", "says"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"{", "not JSON"),
        (b'{"modelTopology": NaN, "weightsManifest": []}', "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[1, 2]", "not a TF.js layers model"),
    ],
)
def test_model_json_that_is_not_json_is_refused(model_json: bytes, says: str) -> None:
    assert says in refused(model_json, lab_files()[1])


def test_weights_that_do_not_fit_are_refused() -> None:
    model_json, weights = lab_files()
    assert "weights.bin holds" in refused(model_json, weights[:-4])
    assert "weights.bin holds" in refused(model_json, weights + b"\0\0\0\0")
    nan = weights[:8] + b"\x00\x00\xc0\x7f" + weights[12:]
    assert "non-finite weights" in refused(model_json, nan)


def test_a_network_that_does_not_fit_its_preprocessing_is_refused() -> None:
    other_json, other_weights = files([numeric("a"), numeric("b")], [(8, "relu")])
    mine, _ = lab_files()
    mixed = edited(mine, lambda d: d.update(modelTopology=json.loads(other_json)["modelTopology"],
                                            weightsManifest=json.loads(other_json)["weightsManifest"]))  # fmt: skip
    assert "the network takes 2 inputs" in refused(mixed, other_weights)


def test_files_beyond_the_upload_limits_are_refused_unread() -> None:
    model_json, weights = lab_files()
    assert "model.json is larger" in refused(model_json + b" " * config.LIMITS.model_json_bytes, weights)
    assert "weights.bin is larger" in refused(model_json, bytes(config.LIMITS.weights_bytes + 4))


# --- the predict body: the domain checks it to the route's model ------------------------------------

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3)
_INSTANCE = st.dictionaries(st.text(max_size=3), _SCALARS, max_size=3)
_BODIES = st.one_of(
    _SCALARS,
    st.lists(_INSTANCE, max_size=2),
    st.fixed_dictionaries({"instances": st.lists(_INSTANCE | _SCALARS, max_size=4)}),
    st.fixed_dictionaries({"instances": st.lists(_INSTANCE, max_size=4)}, optional={"extra": _SCALARS}),
    st.fixed_dictionaries({"instances": _SCALARS | _INSTANCE}),
    st.sampled_from([{"instances": [{}] * MAX_INSTANCES}, {"instances": [{}] * (MAX_INSTANCES + 1)}]),
)


@given(_BODIES)
def test_the_predict_domain_accepts_exactly_the_bodies_the_routes_model_accepts(body) -> None:
    """POST /predict's edge leaves the body to mllab.serving.predict (its path loads no pydantic): what it
    accepts is what the route's model (the OpenAPI contract) accepts, and it refuses the rest with a 422."""
    from pydantic import ValidationError

    from mllab.serving import predict, schemas

    try:
        schemas.PredictRequest.model_validate(body)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    try:
        assert predict._instances(body) == body["instances"]
        domain_accepts = True
    except Problem as problem:
        assert problem.status == 422 and problem.errors
        domain_accepts = False
    assert domain_accepts == model_accepts


def test_a_predict_instance_that_is_not_an_object_is_named() -> None:
    from mllab.serving import predict

    with pytest.raises(Problem) as caught:
        predict._instances({"instances": [{}, 3]})
    assert caught.value.errors == [
        {"field": "instances.1", "message": "an instance is an object of feature values, not a number"}
    ]
