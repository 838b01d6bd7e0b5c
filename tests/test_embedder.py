"""saeembed.Embedder: the reader and SAE loaded once, documents embedded in memory, equal to the CLI."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed import EmbedConfig, Embedder, load_store
from saeembed.errors import ConfigError, CorpusError
from tests import sae_files
from tests.conftest import TEXTS

LAYER = 1


@pytest.fixture
def setup(llama_dir, tmp_path, corpus_file):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["embed", str(corpus_file), "-o", str(out), "--model", str(llama_dir),
                                      "--sae", str(sae), "--layer", str(LAYER), "-q"])
    assert result.exit_code == 0, result.output
    config = EmbedConfig(model=str(llama_dir), sae=str(sae), layer=LAYER)
    return config, load_store(out)


def same_vectors(a, b) -> None:
    assert (a.matrix != b.matrix).nnz == 0
    np.testing.assert_array_equal(a.peak_start, b.peak_start)
    np.testing.assert_array_equal(a.frame["n_tokens"].to_numpy(), b.frame["n_tokens"].to_numpy())


def test_a_list_of_strings_equals_the_cli(setup):
    config, cli = setup
    store = Embedder(config=config).embed(TEXTS)
    same_vectors(store, cli)
    assert store.frame["text"].to_list() == cli.frame["text"].to_list()
    assert store.frame["id"].to_list() == [str(i) for i in range(len(TEXTS))]


def test_a_dataframe_and_records_keep_their_columns_and_write_a_store(setup, tmp_path):
    config, cli = setup
    embedder = Embedder(config=config)
    frame = pl.DataFrame({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "n": list(range(len(TEXTS)))})
    store = embedder.embed(frame, tmp_path / "frame.parquet")
    same_vectors(store, cli)
    assert store.frame.select("id", "n").equals(cli.frame.select("id", "n"))
    assert load_store(tmp_path / "frame.parquet").n_docs == len(TEXTS)
    records = embedder.embed(frame.to_dicts())
    same_vectors(records, cli)
    assert embedder._loaded is not None and embedder.reader is embedder._loaded[0]  # loaded once, reused


def test_bad_documents_are_refused_before_the_model_loads(tmp_path):
    embedder = Embedder(model=str(tmp_path / "no-model"), sae=str(tmp_path / "no-sae"))
    with pytest.raises(CorpusError, match="record 1: expected a string or a dict"):
        embedder.embed(["fine", 3])
    with pytest.raises(CorpusError, match=r"record 1.*'x'"):
        embedder.embed([{"text": "a", "x": 1}, {"text": "b", "x": "one"}])
    with pytest.raises(CorpusError, match="no column 'text'"):
        embedder.embed(pl.DataFrame({"body": ["a"]}))
    with pytest.raises(CorpusError, match="not int"):
        embedder.embed(3)
    assert embedder._loaded is None


def test_a_series_a_single_string_and_the_text_column_given_to_embed(setup):
    """As sentence-transformers takes them: a pandas or polars Series of texts, one string; the text and
    id columns can be named per call."""
    import pandas as pd

    config, cli = setup
    embedder = Embedder(config=config)
    same_vectors(embedder.embed(pd.Series(TEXTS)), cli)
    same_vectors(embedder.embed(pl.Series(TEXTS)), cli)
    one = embedder.embed(TEXTS[2])
    assert one.n_docs == 1 and one.frame["text"][0] == TEXTS[2]
    assert (one.matrix != cli.matrix[2]).nnz == 0
    frame = pl.DataFrame({"key": [f"k{i}" for i in range(len(TEXTS))], "body": TEXTS})
    store = embedder.embed(frame, text_field="body", id_field="key")
    same_vectors(store, cli)
    assert store.frame["id"].to_list() == frame["key"].to_list() and embedder.config.text_field == "text"


def test_settings_are_checked_at_construction():
    with pytest.raises(ConfigError, match="EmbedConfig.pooling"):
        Embedder(pooling="median")
    with pytest.raises(ConfigError, match="unknown EmbedConfig fields: colour"):
        Embedder(colour="blue")
    with pytest.raises(ConfigError, match="not both"):
        Embedder("default", config=EmbedConfig("m", "s"))
