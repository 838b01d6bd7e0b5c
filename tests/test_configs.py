"""Configs refuse values they cannot take at construction, naming the field and what is allowed."""

from __future__ import annotations

import dataclasses

import pytest

from saeembed.embedding.config import EmbedConfig
from saeembed.errors import ConfigError


@pytest.mark.parametrize(("field", "value", "says"), [
    ("pooling", "median", "'max', 'mean', 'sum', 'count'"),
    ("long", "trunc", "'chunk', 'truncate'"),
    ("values_dtype", "bf16", "'float16', 'float32'"),
    ("dtype", "half", "'bfloat16'"),
    ("sae_dtype", "bf16", "'fast'"),
    ("input_format", "xml", "'jsonl'"),
    ("device", "gpu", "'cuda:N'"),
    ("layer", -1, ">= 0"),
    ("layer", 1.5, "integer"),
    ("batch_tokens", 0, ">= 1"),
    ("max_batch_docs", True, "integer"),
    ("max_tokens", 1, ">= 2"),
    ("window_docs", "10", "integer"),
    ("text_field", "", "field name"),
    ("pool_roles", "assistant", "role names"),
    ("as_chat", "", "role name"),
    ("model", "", "hub id"),
])
def test_embed_config_refuses_bad_values_naming_the_field(field, value, says):
    kwargs = {"model": "m", "sae": "s", field: value}
    with pytest.raises(ConfigError) as error:
        EmbedConfig(**kwargs)
    message = str(error.value)
    assert message.startswith(f"EmbedConfig.{field}") and f" = {value!r} is not allowed" in message
    assert says in message and "\n" not in message


def test_embed_config_keeps_good_values_and_normalises_containers(tmp_path):
    config = EmbedConfig("m", "s", pooling="count", long="truncate", values_dtype="float32", device="cuda:1",
                         layer=0, max_tokens=None, pool_roles=["assistant"], cache_dir=str(tmp_path))
    assert config.pool_roles == ("assistant",) and config.cache_dir == tmp_path
    with pytest.raises(ConfigError):
        dataclasses.replace(config, pooling="median")  # replace re-validates


def test_every_embed_config_field_is_documented():
    import saeembed.embedding.config as module

    assert _undocumented(module, "EmbedConfig") == set()


@pytest.mark.parametrize(("field", "value"), [("k", 1), ("k", "4"), ("neighbors", 0), ("min_cluster_size", 1),
                                              ("top_latents", 0), ("central_docs", -1)])
def test_cluster_config_refuses_bad_values(field, value):
    from saeembed.analysis.config import ClusterConfig

    with pytest.raises(ConfigError, match=f"ClusterConfig.{field}"):
        ClusterConfig(**{field: value})


@pytest.mark.parametrize(("field", "value", "says"), [
    ("save_dtype", "fp16", "'float32', 'float16', 'bfloat16'"),
    ("k", 0, ">= 1"),
    ("k", 100, "must not exceed latents"),
    ("reads", "sentence", "'tokens', 'document'"),
    ("matryoshka", (512, 128), "increasing"),
    ("matryoshka", (64, 64), "increasing"),
    ("matryoshka", (0,), "between 0 and latents"),
    ("holdout_fraction", 1.0, "a number >= 0 and < 1"),
    ("buffer_tokens", 100, "at least two batches (2 x batch_size = 8192)"),
    ("lr", 0.0, "a number > 0"),
    ("dtype", "half", "'bfloat16'"),
    ("layer", -2, ">= 0"),
])
def test_train_config_refuses_bad_values_before_training(field, value, says):
    from saeembed.train.config import TrainConfig

    with pytest.raises(ConfigError) as error:
        TrainConfig(**{"model": "m", "layer": 1, "latents": 64, "batch_size": 4096, field: value})
    message = str(error.value)
    assert message.startswith(f"TrainConfig.{field}") and f" = {value!r} is not allowed" in message, message
    assert says in message


def test_every_train_config_field_is_documented():
    import saeembed.train.config as train

    assert _undocumented(train, "TrainConfig") == set()


def _undocumented(module, name: str) -> set[str]:
    import ast
    import inspect

    cls = next(n for n in ast.parse(inspect.getsource(module)).body if isinstance(n, ast.ClassDef) and n.name == name)
    documented, last = set(), None
    for node in cls.body:
        if isinstance(node, ast.AnnAssign):
            last = node.target.id
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and last:
            documented.add(last)
            last = None
    return {f.name for f in dataclasses.fields(getattr(module, name))} - documented


@pytest.mark.parametrize("build", [lambda: __import__("saeembed.embedding.config", fromlist=["x"]).EmbedConfig(
    model="m", sae="s", cache_dir=False), lambda: __import__("saeembed.train.config", fromlist=["x"]).TrainConfig(
    model="m", layer=1, activations_dir=3)])
def test_a_folder_field_refuses_what_is_not_a_path(build):
    """A folder given as a number or a flag was a TypeError from pathlib; it is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=r"(cache_dir \(--cache-dir\)|activations_dir \(--activations-dir\)) = "):
        build()
