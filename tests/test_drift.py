"""drift: concepts that rise or fall along an ordered field. Planted trends are found, trends that are only
documents growing longer are not (with length adjust), random orders give nothing; every kind of ordered
field is read and a bad one refused in one line; the command, its JSON, table and page."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.drift import DriftConfig, describe, drift, order_values
from saeembed.errors import SaeEmbedError
from saeembed.labels.store import Labels
from saeembed.spans import peak_span
from saeembed.synthetic import logit_store
from tests.test_report import HOSTILE, assert_clean, browser, hostile_texts, open_page  # noqa: F401 (fixtures)

N, D = 2400, 30
RISES, FALLS, LENGTH_ONLY = 0, 1, [2, 3, 4, 5]


def planted(tmp_path, name="s", order=None, **fields):
    """Documents in date order; latent 0 rises and latent 1 falls along it; latents 2-5 only follow length,
    and documents get longer along the dates."""
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 1, N))
    tokens = (20 + 200 * t * rng.uniform(0.5, 1.5, N)).astype(int)
    logits = np.full((N, D), -1.5)
    logits[:, RISES] += 2.5 * t
    logits[:, FALLS] -= 2.5 * t
    logits[:, LENGTH_ONLY] += 0.01 * tokens[:, None]
    dates = [str(np.datetime64("2020-01-01") + int(v * 1000)) for v in t]
    if order is not None:
        dates = [dates[i] for i in order]
    return logit_store(tmp_path / f"{name}.parquet", tokens, logits,
                       fields={"date": dates, "text": hostile_texts(N, "doc"), **fields})


def test_planted_trends_are_found_and_length_alone_is_not(tmp_path):
    store = planted(tmp_path)
    result = drift(store, "date")
    found = dict(zip(result.findings["latent"].to_list(), result.findings["direction"].to_list()))
    assert found == {RISES: "rises", FALLS: "falls"}
    summary = result.summary()
    assert (summary.n_findings, summary.n_rising, summary.n_falling, summary.n_tested) == (2, 1, 1, D)
    assert summary.length_rho > 0.8 and any("longer" in note for note in summary.notes)
    dates = np.array(store.frame["date"].to_list())
    assert result.periods["from"][0] == min(dates) and result.periods["to"][4] == max(dates)
    assert (result.periods["from"].to_numpy()[1:] > result.periods["to"].to_numpy()[:-1]).all()
    row = result.findings.row(0, named=True)
    assert row["latent"] == RISES and row["first"] < row["last"] and len(row["frequencies"]) == 5
    assert row["first_lo"] <= row["first"] <= row["first_hi"] and row["q"] <= 0.05
    # the example: in the last period, where the latent is strongest, with its peak's span
    assert row["example_period"] == 4
    doc = store.frame["id"].to_list().index(row["example_id"])
    assert peak_span(store, doc, RISES) == (row["example_start"], row["example_end"])
    ignored = drift(store, "date", DriftConfig(length="ignore"))
    assert set(LENGTH_ONLY) <= set(ignored.findings["latent"].to_list())  # what length adjust keeps out


def test_random_orders_give_no_findings(tmp_path):
    """The trend test's null: the same documents with their dates shuffled, 20 times."""
    rng = np.random.default_rng(3)
    with_findings = 0
    for k in range(20):
        store = planted(tmp_path, f"null{k}", order=rng.permutation(N))
        with_findings += drift(store, "date", DriftConfig(examples=False)).findings.height > 0
    assert with_findings <= 2


def test_every_kind_of_ordered_field_is_read(tmp_path):
    frame = pl.DataFrame({"n": [3, 1, None, 2], "d": ["2024-05-01", "2023-01-02", "", "2024-01-01"],
                          "x": ["1.5", "-2", "3e2", None], "t": ["2024-05-01T10:00:00", "2024-05-01T09:00:00",
                                                               "2024-05-01T11:00:00", "2024-05-02T00:00:00"]})
    values, shown, kept = order_values(frame, "n")
    assert kept.tolist() == [True, True, False, True] and np.argsort(values[kept]).tolist() == [1, 2, 0]
    values, shown, kept = order_values(frame, "d")
    assert kept.tolist() == [True, True, False, True] and shown[0] == "2024-05-01"
    assert np.argsort(values[kept]).tolist() == [1, 2, 0]
    values, _, kept = order_values(frame, "x")
    assert kept.tolist() == [True, True, True, False] and values[:3].tolist() == [1.5, -2.0, 300.0]
    values, _, _ = order_values(frame, "t")
    assert np.argsort(values).tolist() == [1, 0, 2, 3]


@pytest.mark.parametrize("field, says", [
    ("kind", "the field 'kind' holds text that is neither a number nor an ISO date (e.g. 'sport')"),
    ("us_date", "neither a number nor an ISO date (e.g. '01/05/2024')"),
    ("nothing", "the store has no field 'nothing'; its fields: date, kind, us_date"),
])
def test_a_field_without_order_is_refused_in_one_line(tmp_path, field, says):
    store = planted(tmp_path, kind=["sport", "news"] * (N // 2), us_date=["01/05/2024", "12/01/2024"] * (N // 2))
    with pytest.raises(SaeEmbedError) as caught:
        drift(store, field)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_documents_without_a_value_are_left_out_and_said_so(tmp_path):
    store = planted(tmp_path)
    dates = store.frame["date"].to_list()
    holes = planted(tmp_path, "holes", date=[None if i % 10 == 0 else d for i, d in enumerate(dates)])
    result = drift(holes, "date")
    assert result.n_left_out == N // 10 and result.n_docs == N - N // 10
    assert f"{N // 10:,} documents have no 'date'" in " ".join(result.notes)
    assert {RISES, FALLS} <= set(result.findings["latent"].to_list())


def test_a_config_refuses_what_it_does_not_declare():
    with pytest.raises(SaeEmbedError, match=r"DriftConfig.periods \(--periods\) = 1 is not allowed"):
        DriftConfig(periods=1)


def test_the_command_prints_writes_and_pages(tmp_path, open_page):  # noqa: F811 (fixture)
    store = planted(tmp_path)
    labels = Labels(D, {RISES: "streaming · online", FALLS: HOSTILE}, {}, {RISES: 0.9, FALLS: 0.6})
    table, page = tmp_path / "drift.csv", tmp_path / "drift.html"
    runner = CliRunner()
    done = runner.invoke(app, ["drift", str(store.path), "--by", "date", "--json", "-q"])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["type"] == "summary" and lines[0]["n_findings"] == 2 and lines[0]["by"] == "date"
    assert [line["latent"] for line in lines[1:]] == [RISES, FALLS]
    done = runner.invoke(app, ["drift", str(store.path), "--by", "date", "-o", str(table), "--html", str(page)])
    assert done.exit_code == 0, done.output
    assert "2 change" in done.stdout and "rises 0" in done.stdout
    assert pl.read_csv(table).height == D  # every tested latent
    refused = runner.invoke(app, ["drift", str(store.path), "--by", "date", "--periods", "1"])
    assert refused.exit_code == 1 and "DriftConfig.periods (--periods) = 1" in refused.output
    # the page, from the library with labels (the command reads the store's, which it has none of)
    from saeembed.report import write_result_page

    result = drift(store, "date", labels=labels)
    path = write_result_page(result, tmp_path / "labelled.html", "drift.html", "drift")
    opened = open_page(path)
    assert_clean(opened, path.read_text())
    rows = opened.page.locator("#findings tbody.row")
    assert rows.count() == 2 and opened.page.locator("#periods tbody tr").count() == 5
    assert "label quality 0.60, weak" in rows.nth(1).inner_text() and HOSTILE in rows.nth(1).inner_text()
    for i, row in enumerate(result.findings.iter_rows(named=True)):
        assert rows.nth(i).locator("mark").inner_text() == row["example_text"][row["example_start"]:row["example_end"]]
        assert rows.nth(i).locator("svg.spark polyline").count() == 1
    assert "rises" in "\n".join(describe(result))


def test_the_change_is_read_at_equal_length(tmp_path):
    """Latents that follow only length, in a corpus whose documents grow longer along the dates (with lengths
    overlapping): their share rises a lot as the documents are; among documents of similar length (what the
    3-point gate reads) it barely moves, and none is a finding. The planted trend keeps its change. Periods
    that share no length band say that their change is as the documents are."""
    rng = np.random.default_rng(11)
    t = np.sort(rng.uniform(0, 1, N))
    tokens = (40 * np.exp(rng.normal(0, 0.5, N)) * (1 + 1.5 * t)).astype(int) + 5
    logits = np.full((N, D), -1.5)
    logits[:, RISES] += 2.5 * t
    logits[:, LENGTH_ONLY] += 0.02 * tokens[:, None]
    dates = [str(np.datetime64("2020-01-01") + int(v * 1000)) for v in t]
    store = logit_store(tmp_path / "overlap.parquet", tokens, logits, fields={"date": dates})
    result = drift(store, "date")
    table = result.table
    length_only = table.filter(pl.col("latent").is_in(LENGTH_ONLY))
    assert (length_only["last"] - length_only["first"] > 0.1).all()
    assert (length_only["change"].abs() < 0.05).all(), length_only.select("latent", "first", "last", "change")
    assert not set(result.findings["latent"].to_list()) & set(LENGTH_ONLY)
    assert table.filter(pl.col("latent") == RISES)["change"][0] > 0.2
    assert "within" in result.summary().method and "length bands" in result.summary().method
    apart = drift(planted(tmp_path), "date")  # lengths 20-80 first, 100-320 last: no band in common
    assert "share no length band" in " ".join(apart.notes)


def test_tied_values_still_make_periods(tmp_path):
    """900 documents of one year and 300 of the next: two periods, not one, and the trend is found."""
    n = 1200
    later = np.r_[np.zeros(900), np.ones(300)]
    logits = np.full((n, D), -1.5)
    logits[:, RISES] += 2.0 * later
    store = logit_store(tmp_path / "tied.parquet", np.full(n, 30), logits,
                        fields={"year": [2020 + int(v) for v in later], "text": hostile_texts(n, "doc")})
    result = drift(store, "year")
    assert result.periods["from"].to_list() == ["2020", "2021"] and result.summary().periods == ["2020", "2021"]
    assert result.findings["latent"].to_list() == [RISES]


def test_too_few_documents_for_length_bands_is_said(tmp_path):
    store = planted(tmp_path)
    small = store.take(np.arange(0, N, N // 90)[:90])
    result = drift(small, "date", DriftConfig(min_docs=5))
    assert "lengths could not be adjusted" in " ".join(result.notes)
    assert "could not be adjusted" in result.summary().method
