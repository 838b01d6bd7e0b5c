"""Configs keep their promise: every field takes only what it declares (any other value is one ConfigError
naming the field and its flag), and the CLI's options are built from the same declaration (default, help)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import cluster, correlations, diff, registered, risk, train_sae
from saeembed.analysis.config import ClusterConfig, CorrelationConfig, DiffConfig, RiskConfig, SearchConfig
from saeembed.analysis.registry import ANALYSES
from saeembed.embedding.config import EmbedConfig
from saeembed.errors import ConfigError
from saeembed.labels.llm import LLMClient
from saeembed.settings import _kinds, field_docs, limit_of
from saeembed.train.config import TrainConfig

# each config and the command that builds it from its options
COMMANDS = [(DiffConfig, diff.run), (CorrelationConfig, correlations.run), (ClusterConfig, cluster.run),
            (RiskConfig, risk.fit),
            (TrainConfig, train_sae.run), *((a.config_class(), registered.command(a)) for a in ANALYSES)]  # drift ...
CONFIGS = [*(config for config, _ in COMMANDS), SearchConfig, EmbedConfig, LLMClient]
REQUIRED = {EmbedConfig: {"model": "m", "sae": "s"}, TrainConfig: {"model": "m", "layer": 1}, LLMClient: {"model": "m"}}
# options that take another form than their field: required ones, and matryoshka as text "128,512"
OWN_FORM = {TrainConfig: {"model", "layer", "matryoshka"}}
# fields with rules beyond their declaration (checked by the config itself, tested in test_configs.py)
OWN_RULES = {CorrelationConfig: {"min_freq", "max_freq"}, SearchConfig: {"feedback"},
             LLMClient: {"timeout", "cache_dir", "stopped"},
             TrainConfig: {"model", "k", "matryoshka", "buffer_tokens", "device", "batch_size", "latents",
                           "activations_dir"},
             EmbedConfig: {"model", "sae", "device", "text_field", "id_field", "pool_roles", "as_chat", "cache_dir",
                           "ray_address", "workers", "gpus_per_worker", "cpus_per_worker"}}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.sampled_from(["frequency", "mean", "adjust", "ignore", "spectral",
                                                          "hdbscan", "kmeans", "weighted", "jaccard", "l1", "pls"]))


def allowed(config: type, name: str, value) -> bool:
    """The oracle, written from the declaration's meaning rather than from its code."""
    kinds, choices, optional = _kinds(config)[name]
    if value is None:
        return optional
    if choices is not None:
        return value in choices and not isinstance(value, bool)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and int not in kinds and float not in kinds:
        return False
    if isinstance(value, float) and (float not in kinds or math.isnan(value)):
        return False
    if isinstance(value, str):
        return str in kinds
    limit = limit_of({f.name: f for f in dataclasses.fields(config)}[name])
    low_ok = limit.low is None or (value > limit.low if limit.low_open else value >= limit.low)
    high_ok = limit.high is None or (value < limit.high if limit.high_open else value <= limit.high)
    return low_ok and high_ok


@settings(max_examples=300, deadline=None, database=None)
@given(config=st.sampled_from(CONFIGS), data=st.data(), value=VALUES)
def test_a_field_takes_what_it_declares_and_nothing_else(config, data, value):
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(config)
                                      if f.name not in OWN_RULES.get(config, ())]))
    try:
        built = config(**{**REQUIRED.get(config, {}), name: value})
    except ConfigError as exc:
        message = str(exc)
        assert not allowed(config, name, value), message
        assert "\n" not in message and message.startswith(f"{config.__name__}.{name}"), message
        return
    assert allowed(config, name, value), f"{config.__name__}.{name} = {value!r} was taken"
    assert getattr(built, name) == value or (value != value)


@pytest.mark.parametrize("build, says", [
    (lambda: RiskConfig(bootstrap=-5), "RiskConfig.bootstrap (--bootstrap) = -5 is not allowed; give an integer >= 0"),
    (lambda: CorrelationConfig(alpha=5), "CorrelationConfig.alpha (--alpha) = 5 is not allowed; give a number > 0"),
    (lambda: DiffConfig(min_diff=-1), "DiffConfig.min_diff (--min-diff) = -1 is not allowed; give a number >= 0"),
    (lambda: DiffConfig(measure="median"), "choose one of 'frequency', 'mean'"),
    (lambda: ClusterConfig(k=1), "ClusterConfig.k (--clusters) = 1 is not allowed; give an integer >= 2 (or None)"),
    (lambda: DiffConfig(length_bands=True), "DiffConfig.length_bands (--length-bands) = True"),
    (lambda: CorrelationConfig(min_freq=0.5, max_freq=0.4), "min_freq < max_freq (--min-freq, --max-freq)"),
])
def test_refusals_name_the_field_its_flag_and_what_it_takes(build, says):
    with pytest.raises(ConfigError) as caught:
        build()
    assert says in str(caught.value)


@pytest.mark.parametrize("config, command", COMMANDS)
def test_the_cli_options_are_the_configs_declarations(config, command):
    """Every flag a config names is an option of its command, with the config's default and its docstring
    as help: written once, they cannot drift."""
    params = {decl: p for p in typer.main.get_command(typer_app(command)).params
              if not getattr(p, "is_argument", False) for decl in p.opts + list(p.secondary_opts)}
    docs = field_docs(config)
    for field in dataclasses.fields(config):
        flag = limit_of(field).flag
        if flag is None:
            continue
        option = params[flag.split("/")[0]]
        if field.name in OWN_FORM.get(config, ()):
            assert option.help.startswith(docs[field.name]), (config.__name__, field.name)
            continue
        assert option.default == field.default, (config.__name__, field.name)
        assert option.help == docs[field.name], (config.__name__, field.name)


def typer_app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def test_the_embed_options_are_embedconfigs_fields_and_leave_a_presets_values_alone(monkeypatch, tmp_path):
    """`saeembed embed`'s options are EmbedConfig's declarations (help from the field's docstring); unset, they
    are None so a preset's own setting stands: `--preset smollm2-style` reads with count pooling and its
    65-token windows, not the CLI's idea of a default."""
    from typer.testing import CliRunner

    import saeembed.embedding.pipeline as pipeline
    from commands import embed
    from commands.app import app
    from saeembed.embedding.presets import STYLE_SETTINGS

    params = {decl: p for p in typer.main.get_command(typer_app(embed.run)).params
              if not getattr(p, "is_argument", False) for decl in p.opts}
    docs = field_docs(EmbedConfig)
    for field in dataclasses.fields(EmbedConfig):
        flag = limit_of(field).flag
        if flag is None:
            continue
        option = params[flag]
        assert option.default == (False if isinstance(field.default, bool) else None), field.name
        assert option.help.startswith(docs[field.name]), field.name
    seen = []
    monkeypatch.setattr(pipeline, "embed", lambda inputs, output, config, on_progress=None: seen.append(config)
                        or (_ for _ in ()).throw(SystemExit(0)))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a"}\n')
    CliRunner().invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "s.parquet"), "--preset", "smollm2-style"])
    assert seen and all(getattr(seen[0], name) == value for name, value in STYLE_SETTINGS)
    seen.clear()
    CliRunner().invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "s.parquet"), "--preset", "smollm2-style",
                             "--pool", "max"])
    assert seen[0].pooling == "max"
