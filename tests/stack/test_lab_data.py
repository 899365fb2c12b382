"""The lab's data side in a real browser (Debian's Chromium through Playwright) against the local
stack: the XOR demo, CSV loading with Papa Parse (loaded only when a CSV is opened), the column
editor and summary, and js/data.js's pure functions (split, the preprocessor fitted on the training
rows only, decoding) run in the page through a dynamic import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mllab_dev.stack import Stack

from . import lab_support

PAPA = "/vendor/papaparse.min.js"

# A dataset with everything the parser must get right: a quoted comma, a quoted newline, a missing
# number, a categorical column, a counter id column and a free-text (unique) name column.
PEOPLE = (
    'id,name,city,age,income,bought\n'
    '0,"Smith, Ann","New\nYork",34,52000,yes\n'
    '1,Bob,Paris,,41000,no\n'
    '2,Cy,Paris,51,60000,yes\n'
    '3,Di,Rome,28,30000,no\n'
    '4,Ed,Rome,45,58000,yes\n'
    '5,Flo,Paris,39,47000,no\n'
)


class Lab(lab_support.Lab):
    """The lab page with the data panel mounted."""

    def open(self) -> None:
        super().open()
        # The workbench imports the panel; import it too, so this test does not depend on that.
        self.page.evaluate("import('/js/data-panel.js')")
        self.page.get_by_role("button", name="Load the XOR demo").wait_for()
        self.page.evaluate("""async () => {
            const {state} = await import('/js/state.js');
            window.published = [];
            state.on('dataset', (d) => window.published.push(d));
        }""")

    def dataset(self) -> dict | None:
        """The published dataset (without the File), as JSON."""
        return self.page.evaluate("""async () => {
            const {state} = await import('/js/state.js');
            if (!state.dataset) return null;
            const {file, ...rest} = state.dataset;
            return {...rest, file_name: file ? file.name : null};
        }""")

    @property
    def panel(self):
        return self.page.locator("#data-panel")

    def published(self) -> int:
        return self.page.evaluate("window.published.length")

    def papa_requests(self) -> list[str]:
        return [u for u in self.requests if u.endswith(PAPA)]

    def open_csv(self, path: Path) -> None:
        self.panel.get_by_label("Open a CSV file").set_input_files(str(path))

    def run(self, script: str):
        """Runs `async (d) => {...}` in the page with d = the js/data.js module."""
        return self.page.evaluate(
            f"async () => {{ const d = await import('/js/data.js'); return await ({script})(d); }}"
        )


lab = lab_support.fixture(Lab, opened=True)


def column_row(lab: Lab, name: str):
    return lab.page.locator("#data-columns tbody tr").filter(has=lab.page.locator("th", has_text=name))


def test_xor_demo_publishes_the_dataset_and_its_summary(lab: Lab) -> None:
    from playwright.sync_api import expect

    assert lab.dataset() is None
    button = lab.page.get_by_role("button", name="Load the XOR demo")
    button.focus()
    lab.page.keyboard.press("Enter")  # keyboard usable
    expect(lab.page.locator("#data-summary")).to_contain_text("4 rows")
    ds = lab.dataset()
    assert ds["name"] == "XOR" and ds["source"] == "xor"
    assert ds["rows"] == [
        {"x1": 0, "x2": 0, "y": 0},
        {"x1": 0, "x2": 1, "y": 1},
        {"x1": 1, "x2": 0, "y": 1},
        {"x1": 1, "x2": 1, "y": 0},
    ]
    assert ds["target"] == "y" and ds["task"] == "binary"
    assert [(c["name"], c["role"]) for c in ds["columns"]] == [("x1", "feature"), ("x2", "feature"), ("y", "target")]
    assert lab.published() == 1
    expect(lab.page.locator("#data-classes li")).to_have_text(["0 2 rows (50%)", "1 2 rows (50%)"])
    expect(lab.panel.get_by_label("Task", exact=True)).to_have_value("binary")
    expect(lab.page.locator("#data-warnings li")).to_have_count(0)
    assert lab.papa_requests() == []  # the XOR demo needs no CSV parser
    assert lab.page.evaluate("typeof window.Papa") == "undefined"


def test_csv_is_parsed_inferred_summarised_and_editable(lab: Lab, tmp_path: Path, stack: Stack) -> None:
    from playwright.sync_api import expect

    path = tmp_path / "people.csv"
    path.write_text(PEOPLE)
    lab.page.get_by_role("button", name="Load the XOR demo").click()
    assert lab.papa_requests() == [] and lab.page.evaluate("typeof window.Papa") == "undefined"

    lab.open_csv(path)
    expect(lab.page.locator("#data-summary")).to_contain_text(
        "people.csv: 6 rows, 6 columns (3 features), target bought."
    )
    assert len(lab.papa_requests()) == 1  # loaded now, once
    ds = lab.dataset()
    assert ds["source"] == "csv" and ds["file_name"] == "people.csv" and ds["delimiter"] == ","
    assert ds["rows"][0] == {
        "id": 0,
        "name": "Smith, Ann",
        "city": "New\nYork",
        "age": 34,
        "income": 52000,
        "bought": "yes",
    }
    assert ds["rows"][1]["age"] is None
    assert len(ds["rows"]) == 6
    assert ds["text"] == PEOPLE  # a comma-separated file is kept as it is, for a cloud copy
    assert [(c["name"], c["role"], c["type"]) for c in ds["columns"]] == [
        ("id", "ignore", "numeric"),
        ("name", "ignore", "categorical"),
        ("city", "feature", "categorical"),
        ("age", "feature", "numeric"),
        ("income", "feature", "numeric"),
        ("bought", "target", "categorical"),
    ]
    assert ds["target"] == "bought" and ds["task"] == "binary"
    expect(lab.panel.get_by_label("Role of id")).to_have_value("ignore")
    expect(lab.panel.get_by_label("Type of city")).to_have_value("categorical")
    expect(column_row(lab, "age").locator("td").nth(2)).to_have_text("16.7%")
    expect(column_row(lab, "income").locator("td").nth(2)).to_have_text("0%")
    expect(lab.page.locator("#data-classes li")).to_have_text(["no 3 rows (50%)", "yes 3 rows (50%)"])

    lab.screenshot("lab-data", locator="#data-panel")

    # The column editor: every change publishes a new dataset.
    before = lab.published()
    lab.panel.get_by_label("Role of city").focus()
    lab.panel.get_by_label("Role of city").select_option("ignore")
    expect(column_row(lab, "city")).to_have_class("role-ignore")
    # the table is rebuilt, and the keyboard focus stays on the same control
    assert lab.page.evaluate("document.activeElement.getAttribute('aria-label')") == "Role of city"
    assert [c["role"] for c in lab.dataset()["columns"] if c["name"] == "city"] == ["ignore"]
    lab.panel.get_by_label("Role of income").select_option("target")  # the old target becomes a feature
    expect(lab.panel.get_by_label("Task", exact=True)).to_have_value("regression")
    ds = lab.dataset()
    assert ds["target"] == "income" and ds["task"] == "regression"
    assert {c["name"]: c["role"] for c in ds["columns"]}["bought"] == "feature"
    expect(lab.page.locator("#data-classes li")).to_have_count(0)
    lab.panel.get_by_label("Type of age").select_option("categorical")
    assert {c["name"]: c["type"] for c in lab.dataset()["columns"]}["age"] == "categorical"
    lab.panel.get_by_label("Task", exact=True).select_option("binary")  # wrong for a continuous target: say so
    expect(lab.page.locator("#data-warnings li.problem")).to_contain_text(["A binary task needs exactly 2 classes"])
    assert lab.dataset()["task"] == "binary"
    assert lab.published() == before + 4

    # Fine at 390 px wide: the panel fits (the column table scrolls inside it).
    lab.page.set_viewport_size(lab_support.PHONE)
    box = lab.page.locator("#data-panel").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    lab.screenshot("lab-data-phone", locator="#data-panel")

    # Rows in blocks of the target get a warning (the split shuffles them).
    iris = tmp_path / "iris.csv"
    iris.write_text(
        "petal,species\n1.4,setosa\n1.3,setosa\n4.7,versicolor\n4.5,versicolor\n6.0,virginica\n5.1,virginica\n"
    )
    lab.open_csv(iris)
    expect(lab.page.locator("#data-summary")).to_contain_text("iris.csv: 6 rows")
    expect(lab.panel.get_by_label("Task", exact=True)).to_have_value("multiclass")
    expect(lab.page.locator("#data-warnings li")).to_have_text(
        ["The rows look sorted by the target — the split shuffles them."]
    )
    expect(lab.page.locator("#data-classes li")).to_have_text(
        ["setosa 2 rows (33.3%)", "versicolor 2 rows (33.3%)", "virginica 2 rows (33.3%)"]
    )

    # The delimiter override re-parses the open file.
    tie = tmp_path / "tie.csv"
    tie.write_text("a,b;label\n1,2;x\n3,4;y\n")  # commas and semicolons fit equally well: a comma wins
    lab.open_csv(tie)
    expect(lab.page.locator("#data-summary")).to_contain_text("tie.csv: 2 rows, 2 columns")
    assert [c["name"] for c in lab.dataset()["columns"]] == ["a", "b;label"]
    lab.panel.get_by_label("Delimiter").select_option(";")
    expect(lab.page.locator("#data-summary")).to_contain_text("tie.csv: 2 rows, 2 columns (1 feature), target label.")
    ds = lab.dataset()
    assert ds["delimiter"] == ";" and ds["rows"] == [{"a,b": "1,2", "label": "x"}, {"a,b": "3,4", "label": "y"}]
    assert ds["text"] == '"a,b",label\r\n"1,2",x\r\n"3,4",y\r\n'  # rewritten with commas for a cloud copy
    assert len(lab.papa_requests()) == 1
    lab.panel.get_by_label("Delimiter").select_option(label="Tab")
    assert lab.panel.get_by_label("Delimiter").evaluate("(s) => s.value") == "\t"


def test_parse_and_infer_in_the_page(lab: Lab) -> None:
    out = lab.run(
        """async (d) => {
        const people = PEOPLE;
        const p = await d.parseCsv(people);
        const again = await d.parseCsv(d.toCsv(p.fields, p.rows));
        const iris = 'sepal_length,sepal_width,species\\n' + [
            [5.1, 3.5, 'setosa'], [4.9, 3.0, 'setosa'], [7.0, 3.2, 'versicolor'], [6.4, 3.2, 'versicolor'],
            [6.3, 3.3, 'virginica'], [5.8, 2.7, 'virginica']].map((r) => r.join(',')).join('\\n');
        const houses = 'rooms,area,price\\n3,70,210000\\n2,50,150500\\n4,95,330250.5\\n3,80,244000\\n5,120,410000\\n';
        const coded = 'f,label\\n1,0\\n2,1\\n3,2\\n4,0\\n5,1\\n6,2\\n';
        const task = async (text) => {
            const r = await d.parseCsv(text);
            const cols = d.inferColumns(r.fields, r.rows);
            const t = cols.find((c) => c.role === 'target');
            return [t.name, t.type, d.inferTask(r.rows, t.name, t.type)];
        };
        const ragged = await d.parseCsv('a,b,c\\n1,2,3\\n4,5\\n6,7,8,9\\n');
        const quote = await d.parseCsv('a,b\\n1,x\\n2,"open\\n3,""never closed\\n');
        const ids = d.inferColumns(['code', 'v', 't'], [{code: 'A7', v: 1, t: 'x'}, {code: 'B2', v: 1, t: 'y'},
            {code: 'C9', v: 2, t: 'x'}]);
        const sorted = await d.parseCsv(iris), shuffled = d.split(sorted.rows, 'species', {seed: 1, validation: 0});
        const sortedCols = d.inferColumns(sorted.fields, sorted.rows);
        const isSorted = (rows) => d.summarize(rows, sortedCols, 'species').sorted_by_target;
        const mostly = d.inferColumns(['n', 't'],
            Array.from({length: 40}, (_, i) => ({n: i === 3 ? 'n/a?' : i * 1.5, t: i % 2})));
        return {fields: p.fields, rows: p.rows, errors: p.errors, text: p.text === people,
                same: JSON.stringify(again.rows) === JSON.stringify(p.rows),
                iris: await task(iris), houses: await task(houses), yesno: await task(people), coded: await task(coded),
                sorted: [isSorted(sorted.rows), isSorted(shuffled.train)],
                warning: d.summarize(sorted.rows, sortedCols, 'species').warnings,
                ragged: {rows: ragged.rows, errors: ragged.errors}, quote: {rows: quote.rows, errors: quote.errors},
                ids: ids.map((c) => c.role), mostly: mostly.map((c) => c.type),
                cells: ['', ' NA ', '?', '1e3', '007', ' x ', 'TRUE', '2024-01-02', '9007199254740993']
                    .map(d.normalizeCell)};
    }""".replace("PEOPLE", json.dumps(PEOPLE))
    )
    assert out["fields"] == ["id", "name", "city", "age", "income", "bought"]
    assert out["rows"][0]["name"] == "Smith, Ann" and out["rows"][0]["city"] == "New\nYork"
    assert out["rows"][1]["age"] is None and out["errors"] == [] and out["text"]
    assert out["same"], "toCsv -> parseCsv changed the rows"
    assert out["iris"] == ["species", "categorical", "multiclass"]
    assert out["houses"] == ["price", "numeric", "regression"]
    assert out["yesno"] == ["bought", "categorical", "binary"]
    assert out["sorted"] == [True, False]
    assert out["warning"] == ["The rows look sorted by the target — the split shuffles them."]
    assert out["coded"] == ["label", "numeric", "multiclass"]  # integer labels 0..k-1
    assert out["ragged"]["rows"] == [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": None}, {"a": 6, "b": 7, "c": 8}]
    assert [e["row"] for e in out["ragged"]["errors"]] == [2, 3]
    assert out["quote"]["rows"] == [{"a": 1, "b": "x"}, {"a": 2, "b": 'open\n3,""never closed'}]  # the rest, as is
    assert out["quote"]["errors"] == [{"row": 2, "message": "Row 2: Quoted field unterminated."}]
    assert out["ids"] == ["ignore", "feature", "target"]  # unique text codes are ID-like
    assert out["mostly"] == ["numeric", "numeric"]  # 39 of 40 cells are numbers: >= 95%
    assert out["cells"] == [None, None, None, 1000, 7, "x", True, "2024-01-02", "9007199254740993"]


def test_preprocessor_is_fitted_on_the_training_rows_only(lab: Lab) -> None:
    out = lab.run("""async (d) => {
        const rows = Array.from({length: 40}, (_, i) => ({
            a: i % 10, b: i % 7 === 0 ? null : i, flat: 5, color: ['red', 'green', null][i % 3],
            y: i % 2 ? 'yes' : 'no'}));
        const columns = [{name: 'a', role: 'feature', type: 'numeric'}, {name: 'b', role: 'feature', type: 'numeric'},
            {name: 'flat', role: 'feature', type: 'numeric'}, {name: 'color', role: 'feature', type: 'categorical'},
            {name: 'y', role: 'target', type: 'categorical'}];
        const {train, val} = d.split(rows, 'y', {seed: 3});
        const before = JSON.stringify(d.fitPreprocessor(train, columns, 'binary', 'y'));
        val[0].a = 1000; val[0].color = 'purple'; val[1].y = null;  // values only the validation rows have
        const pre = d.fitPreprocessor(train, columns, 'binary', 'y');
        const mean = train.reduce((s, r) => s + r.a, 0) / train.length;
        const std = Math.sqrt(train.reduce((s, r) => s + (r.a - mean) ** 2, 0) / train.length);
        const bPresent = train.filter((r) => r.b !== null).map((r) => r.b);
        const bMean = bPresent.reduce((s, v) => s + v, 0) / bPresent.length;
        const tv = d.transform(pre, val);
        const copy = JSON.parse(JSON.stringify(pre));
        const all = d.transform(pre, rows), allCopy = d.transform(copy, rows);
        const form = d.transformFeatures(pre, {a: '4', b: '', flat: '9', color: 'blue'});
        const minmax = d.fitPreprocessor(train, columns, 'binary', 'y', {scaling: 'minmax'});
        return {pre, same: before === JSON.stringify(pre), mean, std, bMean, tv, form,
                outlier: d.transformFeatures(pre, val[0]), identical: JSON.stringify(all) === JSON.stringify(allCopy),
                finite: all.x.every((r) => r.every(Number.isFinite)),
                minmaxFlat: d.transform(minmax, rows).x.map((r) => r[minmax.feature_names.indexOf('flat')])};
    }""")
    pre = out["pre"]
    assert out["same"], "a value only in the validation rows changed the preprocessor"
    a = next(f for f in pre["features"] if f["name"] == "a")
    assert a["mean"] == pytest.approx(out["mean"]) and a["std"] == pytest.approx(out["std"])
    assert pre["feature_names"] == [
        "a",
        "b",
        "b__missing",
        "flat",
        "color=__missing__",
        "color=green",
        "color=red",
        "color=__unseen__",
    ]
    assert pre["inputs"] == 8 and pre["outputs"] == 1
    assert pre["target_encoding"] == {"type": "binary", "labels": ["no", "yes"]}
    names = pre["feature_names"]
    outlier = out["outlier"]
    assert outlier[names.index("a")] == pytest.approx((1000 - out["mean"]) / out["std"])
    assert outlier[names.index("color=__unseen__")] == 1 and sum(outlier[4:]) == 1  # purple: unseen bucket
    assert out["tv"]["dropped"] == 1 and len(out["tv"]["x"]) == len(out["tv"]["y"])
    assert all(len(y) == 1 and y[0] in (0, 1) for y in out["tv"]["y"])
    assert out["identical"] and out["finite"]
    assert all(v == 0 for v in out["minmaxFlat"])  # zero range -> 0 in min-max too
    form = out["form"]  # strings from a form: a=4, b missing, flat (zero variance) 9, an unseen color
    assert form[names.index("a")] == pytest.approx((4 - out["mean"]) / out["std"])
    b = next(f for f in pre["features"] if f["name"] == "b")
    assert b["mean"] == pytest.approx(out["bMean"]) and b["missing_indicator"] is True
    assert form[names.index("b")] == 0 and form[names.index("b__missing")] == 1  # mean-imputed + indicator
    assert form[names.index("flat")] == 0  # std 0 -> 0, never NaN
    assert form[names.index("color=__unseen__")] == 1

    dec = lab.run("""async (d) => {
        const iris = [['setosa', 1.0], ['versicolor', 2.0], ['virginica', 3.0], ['setosa', 1.2], ['virginica', 2.9]]
            .map(([s, x]) => ({x, s}));
        const cols = (t) => [{name: 'x', role: 'feature', type: 'numeric'},
            {name: t, role: 'target', type: t === 's' ? 'categorical' : 'numeric'}];
        const multi = d.fitPreprocessor(iris, cols('s'), 'multiclass', 's');
        const houses = [{x: 1, p: 100000}, {x: 2, p: 150000}, {x: 3, p: 230000}];
        const reg = d.fitPreprocessor(houses, cols('p'), 'regression', 'p');
        const bin = d.fitPreprocessor([{x: 1, b: 'no'}, {x: 2, b: 'yes'}],
            [{name: 'x', role: 'feature', type: 'numeric'}, {name: 'b', role: 'target', type: 'categorical'}],
            'binary', 'b');
        const regY = d.transform(reg, houses).y;
        const back = (p) => JSON.parse(JSON.stringify(p));
        return {multiY: d.transform(multi, iris).y,
                multi: d.decodeOutput(back(multi), new Float32Array([0.1, 0.7, 0.2])),
                outputs: multi.outputs, reg: regY.map((y) => d.decodeOutput(back(reg), y).value),
                regMean: regY.reduce((s, y) => s + y[0], 0),
                bin: d.decodeOutput(back(bin), [0.9]), bin0: d.decodeOutput(bin, [0.2]),
                errors: [() => d.fitPreprocessor(iris, cols('s'), 'binary', 's'),
                         () => d.fitPreprocessor(iris, cols('s'), 'regression', 's'),
                         () => d.fitPreprocessor(iris, [{name: 's', role: 'target', type: 'categorical'}],
                                                 'multiclass', 's')]
                    .map((f) => { try { f(); return null; } catch (e) { return e.message; } })};
    }""")
    assert dec["outputs"] == 3
    assert dec["multiY"][:3] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert dec["multi"]["label"] == "versicolor"
    assert [p["label"] for p in dec["multi"]["probabilities"]] == ["setosa", "versicolor", "virginica"]
    assert dec["reg"] == pytest.approx([100000, 150000, 230000])
    assert dec["regMean"] == pytest.approx(0, abs=1e-9)  # the target is z-scored for training
    assert dec["bin"]["label"] == "yes" and dec["bin0"]["label"] == "no"
    assert dec["bin"]["probabilities"] == [{"label": "no", "p": pytest.approx(0.1)}, {"label": "yes", "p": 0.9}]
    assert dec["errors"][0].startswith("A binary task needs exactly 2 classes")
    assert dec["errors"][1].startswith("Regression needs a numeric target")
    assert dec["errors"][2] == "Choose at least one feature column."


def test_split_is_seeded_stratified_and_loses_nothing(lab: Lab) -> None:
    out = lab.run("""async (d) => {
        const rows = Array.from({length: 30}, (_, i) => ({id: i, c: i < 15 ? 'a' : i < 25 ? 'b' : 'c'}));
        const ids = (s) => ({train: s.train.map((r) => r.id), val: s.val.map((r) => r.id)});
        const reg = Array.from({length: 50}, (_, i) => ({id: i, y: i * 1.37}));
        const tiny = [{id: 0, c: 'a'}, {id: 1, c: 'a'}, {id: 2, c: 'b'}, {id: 3, c: 'b'}, {id: 4, c: 'z'}];
        return {one: ids(d.split(rows, 'c', {seed: 1})), again: ids(d.split(rows, 'c', {seed: 1})),
                other: ids(d.split(rows, 'c', {seed: 2})),
                unstratified: ids(d.split(rows, 'c', {seed: 1, stratify: false})),
                reg: ids(d.split(reg, 'y', {seed: 5, validation: 0.3, task: 'regression'})),
                tiny: ids(d.split(tiny, 'c', {seed: 1})), none: ids(d.split(tiny, 'c', {seed: 1, validation: 0})),
                xor: ids(d.split(d.xorDataset().rows.map((r, id) => ({...r, id})), 'y',
                                 {seed: 1, validation: d.xorDataset().validation}))};
    }""")
    one = out["one"]
    assert one == out["again"]
    assert one != out["other"]
    assert sorted(one["train"] + one["val"]) == list(range(30))
    assert len(one["val"]) == 6 and len(one["train"]) == 24  # 3 of a, 2 of b, 1 of c
    for split in (one, out["other"]):
        classes = {("a" if i < 15 else "b" if i < 25 else "c") for i in split["val"]}
        assert classes == {"a", "b", "c"}
    assert sorted(out["unstratified"]["train"] + out["unstratified"]["val"]) == list(range(30))
    assert sorted(out["reg"]["train"] + out["reg"]["val"]) == list(range(50)) and len(out["reg"]["val"]) == 15
    tiny = out["tiny"]  # one validation row per class that has two; the single 'z' stays in training
    assert sorted(tiny["val"]) in ([0, 2], [0, 3], [1, 2], [1, 3]) and 4 in tiny["train"]
    assert out["none"]["val"] == [] and sorted(out["none"]["train"]) == [0, 1, 2, 3, 4]
    assert sorted(out["xor"]["train"]) == [0, 1, 2, 3]  # the demo trains on all four rows


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty.csv: The file is empty."),
        ("a,b,label\n", "header.csv: The file has a header row but no data rows."),
        ("a,b,a\n1,2,3\n4,5,6\n", "dup.csv: The header repeats column names: a. Column names must be unique."),
        ("a,,b\n1,2,3\n", "blank.csv: Column 2 has no name"),
        (
            ",".join(f"c{i}" for i in range(201)) + "\n" + ",".join("1" * 201) + "\n",
            "wide.csv: The file has 201 columns",
        ),
    ],
    ids=["empty", "header", "dup", "blank", "wide"],
)
def test_bad_files_say_why_and_publish_nothing(lab: Lab, tmp_path: Path, content: str, message: str) -> None:
    from playwright.sync_api import expect

    name = message.split(":")[0]
    path = tmp_path / name
    path.write_text(content)
    alert = lab.page.get_by_role("alert").filter(has_text=name)
    lab.open_csv(path)
    expect(alert).to_contain_text(message)
    assert lab.dataset() is None and lab.published() == 0
    expect(lab.page.locator("#data-panel .data-details")).to_be_hidden()

    # With a dataset loaded, a bad file leaves it in place; a good file clears the message.
    lab.page.get_by_role("button", name="Load the XOR demo").click()
    assert lab.published() == 1
    lab.panel.get_by_label("Open a CSV file").set_input_files([])
    lab.open_csv(path)
    expect(alert).to_contain_text(message)
    assert lab.dataset()["name"] == "XOR" and lab.published() == 1
    good = tmp_path / "good.csv"
    good.write_text(PEOPLE)
    lab.open_csv(good)
    expect(lab.page.locator("#data-summary")).to_contain_text("good.csv: 6 rows")
    expect(lab.page.locator("#data-panel [role=alert]")).to_have_text("")


def test_a_large_file_parses_in_a_worker(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    path = tmp_path / "big.csv"
    lines = ["x1,x2,label"] + [f"{i % 997 * 0.001:.6f},{(i * 7919) % 10007},{'ab'[i % 2]}" for i in range(400_000)]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 5 * 1024 * 1024
    workers: list[str] = []
    lab.page.on("worker", lambda w: workers.append(w.url))
    lab.open_csv(path)
    expect(lab.page.locator("#data-summary")).to_contain_text("big.csv: 400000 rows, 3 columns")
    assert workers and workers[0].startswith("blob:")
    ds = lab.page.evaluate("""async () => {
        const {state} = await import('/js/state.js');
        const d = state.dataset;
        return {first: d.rows[0], last: d.rows[d.rows.length - 1], task: d.task};
    }""")
    assert ds["first"] == {"x1": 0, "x2": 0, "label": "a"} and ds["task"] == "binary"
    assert ds["last"]["label"] == "b"


def test_rows_with_the_wrong_field_count_are_reported_and_kept(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    path = tmp_path / "ragged.csv"
    path.write_text("a,b,label\n1,2,x\n3,y\n4,5,y,extra\n6,7,x\n")
    lab.open_csv(path)
    expect(lab.page.locator("#data-summary")).to_contain_text("ragged.csv: 4 rows, 3 columns")
    expect(lab.page.locator("#data-warnings li")).to_contain_text(
        [
            "Row 2 has 2 fields, the header has 3; the missing cells are left empty.",
            "Row 3 has 4 fields, the header has 3; the extra cells are ignored.",
        ]
    )
    rows = lab.dataset()["rows"]
    assert rows[1] == {"a": 3, "b": "y", "label": None} and rows[2] == {"a": 4, "b": 5, "label": "y"}
    expect(lab.page.locator("#data-warnings li")).to_contain_text(
        ["1 row has no target value; training leaves it out."]
    )
