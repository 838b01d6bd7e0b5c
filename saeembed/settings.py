"""Settings that keep their promise: each config field declares once what values it takes, `check_fields`
refuses any other naming the field (and the CLI flag that sets it), and `field_help` gives the field's
docstring to whoever builds an option from it, so the library's checks, the CLI's help and its defaults are
read from one place and cannot drift.

    @dataclass
    class DiffConfig:
        alpha: float = setting(0.05, above=0, below=1, flag="--alpha")
        \"\"\"Largest Benjamini-Hochberg q-value of a finding.\"\"\"

        def __post_init__(self) -> None:
            check_fields(self)

The kind of value comes from the annotation: `int` (a bool is not one), `float` (an int is one; NaN is not),
`bool`, `str`, a `Literal[...]` (its values are the choices), and `X | None` (None allowed). Checks that tie two
fields together stay in the config's `__post_init__`, after `check_fields`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from dataclasses import MISSING
from typing import Any, Literal

from saeembed.errors import ConfigError

_KEY = "saeembed.limit"


@dataclasses.dataclass(frozen=True)
class Limit:
    """What a field takes beyond its type: a range (closed unless `above` / `below`) and the flag to name."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    flag: str | None = None

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def setting(default: Any = MISSING, *, at_least: float | None = None, at_most: float | None = None,
            above: float | None = None, below: float | None = None, flag: str | None = None,
            default_factory: Any = MISSING) -> Any:
    """A dataclass field with its limits: `at_least` / `at_most` (closed) or `above` / `below` (open);
    `flag`: the CLI option that sets it, named in the refusal."""
    if at_least is not None and above is not None or at_most is not None and below is not None:
        raise TypeError("give at_least or above, at_most or below, not both")
    limit = Limit(low=above if above is not None else at_least, high=below if below is not None else at_most,
                  low_open=above is not None, high_open=below is not None, flag=flag)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_KEY: limit})


def limit_of(field: dataclasses.Field) -> Limit:
    return field.metadata.get(_KEY) or Limit()


@functools.lru_cache(maxsize=None)
def _kinds(cls: type) -> dict[str, tuple[tuple[type, ...], tuple | None, bool]]:
    """Per field: the accepted types, the choices of a Literal (None: any value of the types), and whether
    None is allowed, read from the class's annotations."""
    hints = typing.get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        optional = type(None) in args
        kinds: list[type] = []
        choices: list[Any] = []
        for arg in (a for a in args if a is not type(None)):
            if typing.get_origin(arg) is Literal:
                choices += typing.get_args(arg)
                kinds += sorted({type(c) for c in typing.get_args(arg)}, key=str)
            elif arg in (int, float, bool, str):
                kinds.append(arg)
            else:  # tuple[str, ...], Path (a str given is converted) ...: checked by the config itself
                kinds.append(object)
        out[field.name] = (tuple(kinds), tuple(choices) or None, optional)
    return out


def check_fields(config: Any) -> None:
    """Refuse the first field of `config` whose value its declaration does not allow, naming the field, the
    flag that sets it and what it takes."""
    cls: type = type(config)
    owner = cls.__name__
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kinds, choices, optional = _kinds(cls)[field.name]
        limit = limit_of(field)
        if value is None:
            if optional:
                continue
            _refuse(owner, field.name, value, limit, _wanted(kinds, choices, limit))
        if not _of_kind(value, kinds) or (choices is not None and value not in choices):
            _refuse(owner, field.name, value, limit, _wanted(kinds, choices, limit, optional))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not limit.holds(value):
            _refuse(owner, field.name, value, limit, _wanted(kinds, choices, limit, optional))


def _of_kind(value: Any, kinds: tuple[type, ...]) -> bool:
    if object in kinds:
        return True
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    if isinstance(value, float):
        return float in kinds and not math.isnan(value)
    return isinstance(value, tuple(k for k in kinds if k not in (int, float, bool)))


def _wanted(kinds: tuple[type, ...], choices: tuple | None, limit: Limit, optional: bool = False) -> str:
    if choices is not None:
        text = "choose one of " + ", ".join(repr(c) for c in choices)
    else:
        noun = {int: "an integer", float: "a number", bool: "true or false", str: "a text"}
        text = "give " + " or ".join(noun.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))
        if limit.describe():
            text += " " + limit.describe()
    return text + (" (or None)" if optional else "")


def refuse(config: Any, name: str, wanted: str) -> typing.NoReturn:
    """Refuse the value of `config.name` by a rule of the config's own (beyond its declaration), worded as
    `check_fields` words its refusals: the field, its flag, the value, what it takes."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    _refuse(type(config).__name__, name, getattr(config, name), limit_of(field), wanted)


def _refuse(owner: str, name: str, value: Any, limit: Limit, wanted: str) -> typing.NoReturn:
    flag = f" ({limit.flag})" if limit.flag else ""
    raise ConfigError(f"{owner}.{name}{flag} = {value!r} is not allowed; {wanted}")


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal right after its annotation), one
    line each: what the field's CLI option says in its help."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def field_type(cls: type, name: str) -> Any:
    """The plain type an option setting `cls.name` parses: the annotation's (a Literal's values' type), as
    `Optional` when None is allowed."""
    kinds, _, optional = _kinds(cls)[name]
    base = next((k for k in kinds if k in (bool, int, float, str)), str)
    return typing.Optional[base] if optional else base  # noqa: UP045 (a runtime type for typer)


def field_help(cls: type, name: str) -> str:
    """The help of the option that sets `cls.name`: the field's docstring."""
    return field_docs(cls).get(name, "")


def field_default(cls: type, name: str) -> Any:
    """The field's default; None for a required field."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not MISSING:
        return field.default
    return None if field.default_factory is MISSING else field.default_factory()
