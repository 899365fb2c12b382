"""Batch predictions in the lab, in Chromium: after training, "Predict a CSV file" gives the same CSV
back with prediction columns, computed in the page (no request leaves it), equal to what the
prediction form says row by row; a file without a feature column says which one is missing."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from playwright.sync_api import expect

from . import lab_support
from .serving_support import ServingLab, flowers_csv, houses_csv

lab = lab_support.fixture(ServingLab)


def batch(lab: ServingLab, path: Path) -> list[dict[str, str]]:
    """Runs the batch form on `path`; the downloaded CSV's rows."""
    form = lab.page.locator("#batch-form")
    form.get_by_label("CSV file with the feature columns").set_input_files(str(path))
    before = len(lab.requests)
    form.get_by_role("button", name="Predict the file").click()
    link = lab.page.locator("#batch-download")
    expect(link).to_be_visible()
    assert not [u for u in lab.requests[before:] if "/js/" not in u and "/vendor/" not in u]  # nothing uploaded
    with lab.page.expect_download() as download:
        link.click()
    return list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))


def test_a_csv_comes_back_with_the_labs_predictions(lab: ServingLab, tmp_path: Path) -> None:
    data = tmp_path / "flowers.csv"
    data.write_text(flowers_csv(60))
    lab.open()
    task = lab.train_csv(data, [(8, "relu")], epochs=30, lr=0.05)
    assert task == "multiclass"
    rows = lab.dataset_rows()[:12]
    to_predict = tmp_path / "new flowers.csv"
    header = ["note", *rows[0].keys()]
    to_predict.write_text("\n".join([",".join(header), *(",".join(["x", *map(str, r.values())]) for r in rows)]) + "\n")
    got = batch(lab, to_predict)
    expected = lab.trained(task, rows).tfjs
    assert len(got) == len(rows)
    labels = ["setosa", "versicolor", "virginica"]
    assert list(got[0]) == [*header, "species_predicted", *(f"p(species={label})" for label in labels)]
    for row, theirs in zip(got, expected, strict=True):
        assert row["note"] == "x"
        assert row["species_predicted"] == theirs["label"]
        for label, p in zip(labels, theirs["probabilities"], strict=True):
            assert abs(float(row[f"p(species={label})"]) - p["p"]) <= 1e-6
    expect(lab.page.locator("#batch-status")).to_contain_text("Predicted 12 rows")


def test_regression_adds_a_value_column_and_a_missing_feature_is_named(lab: ServingLab, tmp_path: Path) -> None:
    data = tmp_path / "houses.csv"
    data.write_text(houses_csv(40))
    lab.open()
    assert lab.train_csv(data, [(8, "tanh")], epochs=20) == "regression"
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("area,rooms,garden\n50,2,true\n")
    form = lab.page.locator("#batch-form")
    form.get_by_label("CSV file with the feature columns").set_input_files(str(lacking))
    form.get_by_role("button", name="Predict the file").click()
    expect(lab.page.locator("#batch-status")).to_contain_text("The file has no column “city”")
    expect(lab.page.locator("#batch-download")).to_have_count(0)
    complete = tmp_path / "complete.csv"
    complete.write_text("area,rooms,city,garden,price_predicted\n50,2,Paris,true,old\n,3,,false,old\n")
    got = batch(lab, complete)
    assert [list(r) for r in got] == [["area", "rooms", "city", "garden", "price_predicted", "price_predicted_2"]] * 2
    assert [r["price_predicted"] for r in got] == ["old", "old"]  # the file's own column is kept
    assert all(math.isfinite(float(r["price_predicted_2"])) for r in got)
