"""`search --where` over any filter text: either the rows the condition keeps, worked out here
independently for the grammar's simple forms, or one FilterError line; never another exception, never
the content of a file or anything outside the store's own fields."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saeembed.analysis.where import FilterError, filter_rows

# 100 examples per test keep the file at a few seconds; SAEEMBED_FUZZ_EXAMPLES=2000 searches deeper
EXAMPLES = int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SECRET = "s3cret-line-nobody-may-print"
FRAME = pl.DataFrame({"id": ["a", "b", "c", "d"], "text": ["rain today", "Sun", None, "50% off"],
                      "n_tokens": [3, 10, 5, 7], "topic": ["w", "s", None, "w"], "score": [0.5, 2.0, None, -1.0],
                      "flag": [True, False, None, True]})


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "passwd.csv"
    path.write_text(f"{SECRET}\n{SECRET}\n")
    return str(path)


# Everything that reaches outside the store: table functions, subqueries, file and network readers.
ESCAPES = ["id IN (SELECT column_1 FROM read_csv('{f}'))", "id IN (SELECT * FROM read_csv_auto('{f}'))",
           "EXISTS (SELECT 1 FROM read_parquet('{f}'))", "id = (SELECT column_1 FROM '{f}')",
           "read_text('{f}') IS NOT NULL", "id IN (SELECT column0 FROM read_csv('{f}', header=false))",
           "id = 'a' UNION SELECT * FROM read_csv('{f}')", "id = 'a'; SELECT * FROM read_csv('{f}')",
           "id IN (FROM read_csv('{f}'))", "getenv('HOME') = id", "id = current_setting('x')",
           "id IN (SELECT * FROM (VALUES ('a')))", "id = pg_read_file('{f}')", "id = load_file('{f}')",
           "id IN (SELECT id FROM self)", "id IN (SELECT id FROM df)", "httpfs('http://127.0.0.1:1/') = id"]


@pytest.mark.parametrize("template", ESCAPES)
def test_a_filter_never_reads_outside_the_store(template, secret_file):
    with pytest.raises(FilterError) as caught:
        filter_rows(FRAME, template.format(f=secret_file))
    message = str(caught.value)
    assert SECRET not in message and "\n" not in message


@pytest.mark.parametrize("where, rows", [
    ("1 = 1", [0, 1, 2, 3]), ("TRUE", [0, 1, 2, 3]), ("FALSE", []), ("'x' = 'y'", []),
    ("topic = 'w' AND n_tokens > 4", [3]), ("topic == 's' OR score < 0", [1, 3]), ("topic IS NULL", [2]),
    ("text LIKE '%rain%'", [0]), ("text NOT LIKE '%a%'", [1, 3]), ("text ILIKE 'SUN'", [1]),
    ("text LIKE '50!% off'", []), ("n_tokens BETWEEN 3 AND 5", [0, 2]), ("n_tokens NOT BETWEEN 3 AND 5", [1, 3]),
    ("n_tokens IN (3, -1, 10)", [0, 1]), ("topic NOT IN ('w')", [1]), ("NOT (n_tokens < 6)", [1, 3]),
    ("flag", [0, 3]), ("flag IS NOT TRUE", [1, 2]), ("n_tokens % 2 = 1 AND n_tokens * 2 > 7", [2, 3]),
    ('"topic" = \'w\'', [0, 3]), ("score > 0", [0, 1])])
def test_a_filter_keeps_the_rows_its_condition_holds_for(where, rows):
    """A constant filter holds for every row or none (it used to become a one-row mask); unknown (null)
    keeps nothing, as in SQL."""
    assert filter_rows(FRAME, where).tolist() == rows


@pytest.mark.parametrize("where, says", [
    ("n_tokens", "not true or false"), ("score + 1", "not true or false"), ("nope = 1", "no field 'nope'"),
    ("lower(topic) = 'w'", "function"), ("CAST(id AS INT) = 1", "function"), ("t.id = 'a'", "names a table"),
    ("topic > 5", "cannot apply"), ("id = ", "cannot read"), ("(" * 5000, "cannot read"), ("x" * 20_000, "too long"),
    ("id = ?", "not allowed"), ("*", "not allowed")])
def test_what_is_not_a_condition_on_the_fields_is_one_line(where, says):
    with pytest.raises(FilterError, match=says) as caught:
        filter_rows(FRAME, where)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 600


atoms = st.sampled_from(["id", "text", "n_tokens", "topic", "score", "flag", "nope", "'w'", "'%a%'", "3", "-1",
                         "2.5", "NULL", "TRUE", "FALSE", "read_csv('x')", "(SELECT 1)", "lower(id)", "*", "?"])
operators = st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">=", "AND", "OR", "+", "-", "*", "/", "%",
                             "LIKE", "NOT LIKE", "ILIKE", "IS", "IS NOT", "IN", "NOT", "BETWEEN", "(", ")", ",",
                             ";", "::", "UNION", "SELECT", "FROM", "'", '"'])
filters = st.one_of(st.text(max_size=40),
                    st.lists(st.one_of(atoms, operators), min_size=1, max_size=12).map(" ".join))


@FUZZ
@given(where=filters)
def test_any_filter_is_rows_or_one_line(where):
    try:
        rows = filter_rows(FRAME, where)
    except FilterError as exc:
        assert "\n" not in str(exc)
        return
    assert rows.dtype.kind == "i" and (np.diff(rows) > 0).all() and ((rows >= 0) & (rows < FRAME.height)).all()
