"""Filters on a store's own fields (`search --where "topic = 'climate' AND n_tokens < 200"`).

A filter is an SQL-like condition over the fields of the store and nothing else. It is parsed with
sqlglot and translated node by node into a polars expression; anything not on the list below (a
function call, a subquery, a table function such as `read_csv`, a column the store does not have) is
refused before anything runs, so a filter can never read a file, reach the network or see another
table. polars' own SQL engine is not used for it: it accepts table functions and subqueries.

Allowed: field names (double-quote names with spaces), string and number literals, TRUE / FALSE /
NULL; = == != <> < <= > >=; AND OR NOT; + - * / %; IS [NOT] NULL, IS [NOT] TRUE/FALSE;
[NOT] IN (literals); [NOT] BETWEEN x AND y; [NOT] LIKE / ILIKE with % and _; parentheses.
"""

from __future__ import annotations

import functools
import operator
import re
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import numpy as np

from saeembed.errors import FilterError, first_line

if TYPE_CHECKING:
    import polars as pl

# A filter is typed by a person; a longer one is almost surely not, and deep nesting is what makes
# a recursive parser fall over.
MAX_LENGTH = 10_000


def filter_rows(frame: pl.DataFrame, where: str | None) -> np.ndarray:
    """The row numbers of `frame` that `where` keeps, in order (every row when `where` is empty).
    A null result (SQL's unknown, e.g. a comparison with a missing value) does not keep a row."""
    import polars as pl

    if not where or not where.strip():
        return np.arange(frame.height)
    expression = parse_filter(where, frame.columns)
    try:
        kind = frame.lazy().select(expression.alias("keep")).collect_schema()["keep"]
        if kind != pl.Boolean:
            raise FilterError(f"filter {_shown(where)} gives {kind}, not true or false; write a condition, "
                              f"e.g. {_example(frame)}")
        keep = frame.select(expression.alias("keep"))["keep"].fill_null(False).to_numpy()
    except pl.exceptions.PolarsError as exc:  # a type mismatch such as topic > 5: the user's filter
        raise FilterError(f"cannot apply filter {_shown(where)}: {first_line(exc)}") from None
    if len(keep) == 1 and frame.height != 1:  # a constant (`1 = 1`, `TRUE`) holds for every row or none
        keep = np.full(frame.height, bool(keep[0]))
    return np.flatnonzero(keep)


def parse_filter(where: str, columns: list[str]) -> pl.Expr:
    """`where` as a polars expression over `columns`; FilterError names what is not allowed."""
    import sqlglot
    from sqlglot import errors

    if len(where) > MAX_LENGTH:
        raise FilterError(f"a filter of {len(where):,} characters is too long (at most {MAX_LENGTH:,})")
    try:
        tree = sqlglot.parse_one(where, read="duckdb")
    except (errors.ParseError, errors.TokenError, RecursionError, ValueError) as exc:
        raise FilterError(f"cannot read filter {_shown(where)}: {first_line(exc, 120)}; write a condition "
                          f"on the store's fields, e.g. topic = 'climate' AND n_tokens < 200") from None
    return _Translator(where, columns).translate(tree)


class _Translator:
    def __init__(self, where: str, columns: list[str]) -> None:
        self.where, self.columns = where, columns

    def translate(self, node: Any) -> pl.Expr:
        import polars as pl
        from sqlglot import exp

        handler = _handlers().get(type(node))
        if handler is not None:
            translated = handler(self, node)
            return ~translated if node.args.get("negate") else translated  # NOT LIKE, NOT IN ...
        if isinstance(node, exp.Column):
            if node.table or node.args.get("db"):
                self.refuse(f"{node.sql()} names a table; use the store's field names alone")
            name = node.name
            if name not in self.columns:
                self.refuse(f"the store has no field {name!r}; fields: "
                            f"{', '.join(c for c in self.columns if c != 'text')}, text")
            return pl.col(name)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return pl.lit(node.this, dtype=pl.Utf8)
            number = node.this
            try:
                return pl.lit(int(number)) if re.fullmatch(r"[0-9]+", number) else pl.lit(float(number))
            except ValueError:
                self.refuse(f"{number!r} is not a number")
        if isinstance(node, exp.Boolean):
            return pl.lit(bool(node.this))
        if isinstance(node, exp.Null):
            return pl.lit(None)
        what = type(node).__name__.upper()
        if isinstance(node, (exp.Subquery, exp.Select, exp.Query, exp.Table)):
            what = "a subquery"
        elif isinstance(node, exp.Block):
            self.refuse("a filter is one condition (no ';')")
        elif isinstance(node, exp.Func):
            what = f"the function {node.sql_name() if hasattr(node, 'sql_name') else what}"
        self.refuse(f"{what} is not allowed in a filter (only the store's fields, literals, comparisons, "
                    f"AND/OR/NOT, arithmetic, IS NULL, IN (...), BETWEEN, LIKE)")

    def refuse(self, why: str) -> NoReturn:
        raise FilterError(f"filter {_shown(self.where)}: {why}")

    # The handlers of _handlers(): each takes the node of its kind.

    def is_(self, node: Any) -> pl.Expr:
        from sqlglot import exp

        target, test = self.translate(node.this), node.expression
        if isinstance(test, exp.Null):
            return target.is_null()
        if isinstance(test, exp.Boolean):
            return target.fill_null(not test.this) == bool(test.this)
        self.refuse("IS takes NULL, TRUE or FALSE")

    def in_(self, node: Any) -> pl.Expr:
        import polars as pl
        from sqlglot import exp

        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            self.refuse("IN takes a list of values, e.g. topic IN ('a', 'b'), not a subquery")
        values = []
        for item in node.expressions:
            negative = isinstance(item, exp.Neg) and isinstance(item.this, exp.Literal) and not item.this.is_string
            if not (negative or isinstance(item, (exp.Literal, exp.Boolean, exp.Null))):
                self.refuse(f"IN takes literal values; {item.sql()} is not one")
            values.append(self.translate(item))
        target = self.translate(node.this)
        if not values:
            return pl.lit(False)
        test = values[0] == target
        for value in values[1:]:
            test = test | (value == target)
        return test

    def between(self, node: Any) -> pl.Expr:
        target = self.translate(node.this)
        return (target >= self.translate(node.args["low"])) & (target <= self.translate(node.args["high"]))

    def like(self, node: Any, case_sensitive: bool = True) -> pl.Expr:
        from sqlglot import exp

        pattern = node.expression
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            self.refuse("LIKE takes a quoted pattern, e.g. text LIKE '%rain%'")
        if node.args.get("escape"):
            self.refuse("LIKE ... ESCAPE is not supported")
        regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern.this)
        return self.translate(node.this).str.contains(("(?s)" if case_sensitive else "(?si)") + f"^{regex}$")

    def paren(self, node: Any) -> pl.Expr:
        return self.translate(node.this)


@functools.cache
def _handlers() -> dict[type, Callable[[_Translator, Any], Any]]:
    """The allowed nodes and how each becomes polars (built on first use: sqlglot is imported only when a
    filter is given)."""
    from sqlglot import exp

    t = _Translator
    binary = {exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt, exp.GTE: operator.ge,
              exp.LT: operator.lt, exp.LTE: operator.le, exp.And: operator.and_, exp.Or: operator.or_,
              exp.Add: operator.add, exp.Sub: operator.sub, exp.Mul: operator.mul, exp.Div: operator.truediv,
              exp.Mod: operator.mod}
    handlers: dict[type, Callable[[_Translator, Any], Any]] = {
        kind: functools.partial(_binary, op=op) for kind, op in binary.items()}
    handlers.update({
        exp.Not: lambda self, node: ~self.translate(node.this),
        exp.Neg: lambda self, node: -self.translate(node.this),
        exp.Paren: t.paren, exp.Is: t.is_, exp.In: t.in_, exp.Between: t.between, exp.Like: t.like,
        exp.ILike: lambda self, node: t.like(self, node, case_sensitive=False)})
    return handlers


def _binary(translator: _Translator, node: Any, op: Callable[[Any, Any], Any]) -> pl.Expr:
    return op(translator.translate(node.this), translator.translate(node.expression))


def _shown(where: str) -> str:
    return repr(where if len(where) <= 80 else where[:80] + "…")


def _example(frame: pl.DataFrame) -> str:
    name = next((c for c in frame.columns if c not in ("id", "text")), "n_tokens")
    return f"{name} = 'value'" if name != "n_tokens" else "n_tokens < 200"
