"""Stored vectors equal an independent reference: uncut model, output_hidden_states, dense encode, pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeembed import EmbedConfig, embed, load_store
from saeembed.errors import CorpusError, ReaderError, SAEError
from saeembed.outputs import OutputError
from saeembed.store import COUNT_STATS
from tests import sae_files
from tests.conftest import STRICT_TEMPLATE, TEXTS, with_chat_template

LAYER = 1


def reference(model_dir: Path, encode, texts: list[str], pooling: str = "max", *, chat_role: str | None = None,
              pool_role: str | None = None, token_counts: list | None = None
              ) -> tuple[np.ndarray, list[dict[int, tuple[int, int]]]]:
    """Dense [docs, d_sae] pooled codes and, per doc, latent -> character span of its peak token.
    `token_counts` receives, per doc, the number of active latents on each pooled token."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()  # all layers: nothing cut
    rows, peaks = [], []
    for text in texts:
        if chat_role:
            messages = [{"role": "user", "content": "Say something."}, {"role": chat_role, "content": text}]
            rendered = tok.apply_chat_template(messages, tokenize=False)
            enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True, return_special_tokens_mask=True)
            lo = rendered.find(text.strip(), rendered.find("Say something.") + 14)
            hi = lo + len(text.strip())
        else:
            enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
            if tok.bos_token_id is not None and enc["input_ids"][:1] != [tok.bos_token_id]:
                # a decoder whose tokenizer adds no BOS (GPT-2 here) is read after one all the same
                enc = {"input_ids": [tok.bos_token_id, *enc["input_ids"]],
                       "offset_mapping": [(0, 0), *enc["offset_mapping"]]}
        ids = enc["input_ids"]
        special = set(tok.all_special_ids)
        keep = [i for i, (t, (s, e)) in enumerate(zip(ids, enc["offset_mapping"])) if t not in special and e > s
                and (not pool_role or (s < hi and e > lo))]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]
        codes = encode(hidden[keep])
        if token_counts is not None:
            token_counts.append((codes > 0).sum(1).numpy())
        pooled = {"max": codes.max(0).values, "sum": codes.sum(0), "mean": codes.mean(0),
                  "count": (codes > 0).float().sum(0)}[pooling]
        rows.append(pooled.numpy())
        top = codes.argmax(0)
        peaks.append({j: tuple(enc["offset_mapping"][keep[int(top[j])]]) for j in range(codes.shape[1])
                      if codes[:, j].max() > 0})
    return np.stack(rows), peaks


def run(tmp_path: Path, model_dir: Path, sae: Path, inputs, **overrides):
    config = EmbedConfig(model=str(model_dir), sae=str(sae), layer=LAYER, cache_dir=tmp_path / "cache",
                         batch_tokens=64, **overrides)
    out = tmp_path / "out.parquet"
    result = embed(inputs, out, config)
    return result, load_store(out)


def assert_matches(store, expected: np.ndarray, peaks=None):
    dense = store.matrix.toarray()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(dense, expected, rtol=2e-3, atol=2e-3 * scale)
    if peaks is not None:
        agree = total = 0
        for i, doc_peaks in enumerate(peaks):
            start, stop = store.matrix.indptr[i], store.matrix.indptr[i + 1]
            for k in range(start, stop):
                latent = store.matrix.indices[k]
                if latent in doc_peaks:
                    total += 1
                    agree += (store.peak_start[k], store.peak_end[k]) == doc_peaks[latent]
        assert total > 0 and agree / total > 0.97, f"peak spans agree on {agree}/{total}"


@pytest.mark.parametrize("model_fixture", ["llama_dir", "gemma2_dir", "gpt2_dir", "bert_dir"])
@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_store_equals_reference(request, model_fixture, arch, tmp_path, corpus_file):
    model_dir = request.getfixturevalue(model_fixture)
    d_model = json.loads((model_dir / "config.json").read_text())
    d_in = d_model.get("hidden_size") or d_model["n_embd"]
    sae, encode = sae_files.saelens(tmp_path / "sae", d_in, arch=arch, layer=LAYER)
    result, store = run(tmp_path, model_dir, sae, [str(corpus_file)])
    expected, peaks = reference(model_dir, encode, TEXTS)
    assert_matches(store, expected, peaks)
    assert result.n_docs == len(TEXTS) and store.frame["id"].to_list() == [f"d{i}" for i in range(len(TEXTS))]
    assert store.frame["n"].to_list() == list(range(len(TEXTS))), "input fields pass through"
    assert (store.frame["n_tokens"].to_numpy() > 0).all()


def test_concept_count_statistics_per_token(llama_dir, tmp_path, corpus_file):
    """Mean, max and percentiles of the active latents per pooled token, as an uncut model gives them."""
    sae, encode = sae_files.saelens(tmp_path / "sae", 64, arch="jumprelu", layer=LAYER)  # a varying count
    _, store = run(tmp_path, llama_dir, sae, [str(corpus_file)])
    counts: list = []
    reference(llama_dir, encode, TEXTS, token_counts=counts)
    expected = np.array([[c.mean(), c.max(), *np.percentile(c, [10, 50, 90])] for c in counts])
    got = store.frame.select(COUNT_STATS).to_numpy()
    assert expected[:, 0].std() > 0, "the check needs documents whose counts differ"
    np.testing.assert_allclose(got, expected, atol=0.51)  # a rare token may flip at the threshold in f32
    assert np.abs(got - expected).mean() < 0.05


@pytest.mark.parametrize("pooling", ["mean", "sum", "count"])
def test_other_poolings_equal_reference(pooling, llama_dir, tmp_path, corpus_file):
    sae, encode = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    _, store = run(tmp_path, llama_dir, sae, [str(corpus_file)], pooling=pooling, values_dtype="float32")
    assert_matches(store, reference(llama_dir, encode, TEXTS, pooling)[0])
    assert store.meta["pooling"] == pooling


def test_every_format_embeds_end_to_end(llama_dir, tmp_path, corpus_file):
    for name, (path, encode) in {
        "goodfire": sae_files.goodfire(tmp_path / "gf", 64, layer=LAYER),
        "gemmascope": sae_files.gemmascope(tmp_path / "gs", 64, layer=LAYER),
        "sparsify": sae_files.sparsify(tmp_path / "sp", 64, layer=LAYER),
        "dictionary_learning": sae_files.dictionary_learning(tmp_path / "dl", 64, kind="AutoEncoderTopK", layer=LAYER),
        "saelens-gated": sae_files.saelens(tmp_path / "ga", 64, arch="gated", layer=LAYER),
    }.items():
        _, store = run(tmp_path / name, llama_dir, path, [str(corpus_file)])
        assert_matches(store, reference(llama_dir, encode, TEXTS)[0])


def test_chat_pools_only_the_assistant_while_reading_the_whole_conversation(llama_dir, tmp_path):
    from saeembed.form_counts import stored_columns

    corpus = tmp_path / "chats.jsonl"
    corpus.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "Say something."},
                                                       {"role": "assistant", "content": t}]}) + "\n" for t in TEXTS))
    sae, encode = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    _, store = run(tmp_path, llama_dir, sae, [str(corpus)], pool_roles=("assistant",))
    expected, peaks = reference(llama_dir, encode, TEXTS, chat_role="assistant", pool_role="assistant")
    assert_matches(store, expected, peaks)
    text = store.frame["text"][0]
    assert text.startswith("<s><|user|>") and "<|assistant|>" in text, "text is what the model read"
    start, end = store.peak_start[0], store.peak_end[0]
    assert text.index(TEXTS[0]) <= start < end <= text.index(TEXTS[0]) + len(TEXTS[0]), "peaks lie in the answer"
    # the form counts are the answer's, as the form layer reads a chat pooled on one role
    assert store.form.column("openings").to_pylist()[0] == stored_columns([TEXTS[0]])["openings"].to_pylist()[0]


def test_a_conversation_the_template_rejects_is_refused_before_the_model_loads(llama_dir, tmp_path):
    """Every conversation is rendered with the template (tokenizer only) first: one it rejects is refused
    with the others' problems, naming its line, before the weights are read (here they are damaged, so a
    load would say so instead) and before anything is embedded."""
    model = with_chat_template(llama_dir, tmp_path / "model", STRICT_TEMPLATE)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    chats = [[{"role": "user", "content": t}] for t in TEXTS]
    chats[5] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    corpus = tmp_path / "chats.jsonl"
    corpus.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in chats))
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    config = EmbedConfig(model=str(model), sae=str(sae), layer=LAYER, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(CorpusError, match=r"1 conversation\(s\) cannot be read.*line 6.*no system turns"):
        embed([str(corpus)], tmp_path / "out.parquet", config)
    assert not (tmp_path / "out.parquet").exists()


def test_chat_messages_reach_the_store_with_every_key(llama_dir, tmp_path):
    """Keys beside role and content (a speaker name, metadata) are input fields like any other: kept."""
    corpus = tmp_path / "chats.jsonl"
    chats = [[{"role": "user", "content": "Say something.", "name": "ann", "meta": {"turn": i}},
              {"role": "assistant", "content": t}] for i, t in enumerate(TEXTS)]
    corpus.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in chats))
    sae, encode = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    _, store = run(tmp_path, llama_dir, sae, [str(corpus)], pool_roles=("assistant",))
    stored = [[{k: v for k, v in m.items() if v is not None} for m in chat]  # Arrow fills absent keys with null
              for chat in store.frame["messages"].to_list()]
    assert stored == chats
    expected, _ = reference(llama_dir, encode, TEXTS, chat_role="assistant", pool_role="assistant")
    assert_matches(store, expected)  # this template ignores the other keys: the same conversation is read


def test_plain_text_wrapped_as_a_chat_turn(llama_dir, tmp_path, corpus_file):
    sae, encode = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    _, plain = run(tmp_path / "a", llama_dir, sae, [str(corpus_file)])
    _, chat = run(tmp_path / "b", llama_dir, sae, [str(corpus_file)], as_chat="assistant")
    assert chat.frame["text"][0] == f"<s><|assistant|>\n{TEXTS[0]}</s>\n"
    assert not np.allclose(plain.matrix.toarray(), chat.matrix.toarray()), "the template changes the context"


def test_long_documents_are_chunked_and_pooled_across_chunks(llama_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    long_text = " ".join(TEXTS)
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"text": long_text}) + "\n" + json.dumps({"text": "Just perfect."}) + "\n")
    sae, encode = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    result, store = run(tmp_path, llama_dir, sae, [str(corpus)], max_tokens=16)
    assert result.n_chunked == 1 and result.n_truncated == 0
    # Reference: each 15-token window read on its own after BOS, max over all windows.
    tok, model = AutoTokenizer.from_pretrained(llama_dir), AutoModel.from_pretrained(llama_dir).eval()
    ids = tok(long_text, add_special_tokens=False)["input_ids"]
    windows = [ids[i: i + 15] for i in range(0, len(ids), 15)]
    with torch.no_grad():
        codes = [encode(model(input_ids=torch.tensor([[1] + w]), output_hidden_states=True)
                        .hidden_states[LAYER + 1][0, 1:]) for w in windows]
    expected = torch.cat(codes).max(0).values.numpy()
    np.testing.assert_allclose(store.matrix[0].toarray()[0], expected, rtol=2e-3, atol=2e-3 * expected.max())
    assert store.frame["n_tokens"][0] == len(ids)

    result, store = run(tmp_path / "t", llama_dir, sae, [str(corpus)], max_tokens=16, long="truncate")
    assert result.n_truncated == 1 and store.frame["n_tokens"][0] == 15


def test_store_is_plain_parquet_with_self_describing_metadata(llama_dir, tmp_path, corpus_file):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    run(tmp_path, llama_dir, sae, [str(corpus_file)])
    frame = pl.read_parquet(tmp_path / "out.parquet")
    assert frame.schema["indices"] == pl.List(pl.Int32) and frame.schema["values"] == pl.List(pl.Float16)
    for indices in frame["indices"].to_list():
        assert indices == sorted(indices) and len(indices) == len(set(indices))
    meta = load_store(tmp_path / "out.parquet").meta
    assert meta["model"]["layer"] == LAYER and meta["model"]["hook"] == "blocks.1.hook_resid_post"
    assert meta["sae"]["format"] == "saelens" and meta["sae"]["d_sae"] == 96 and meta["sae"]["fingerprint"]
    assert meta["n_docs"] == len(TEXTS) and meta["versions"]["torch"] == torch.__version__
    # each text's form counts, counted once as it was stored, beside the vectors and not among the fields
    from saeembed.form_counts import FORM_FINGERPRINT, stored_columns

    assert meta["form"]["fingerprint"] == FORM_FINGERPRINT
    store = load_store(tmp_path / "out.parquet")
    assert store.form is not None and "form_counts" not in store.frame.columns
    expected = stored_columns(store.frame["text"].to_list())
    assert store.form.column("form_counts").to_pylist() == expected["form_counts"].to_pylist()
    assert store.form.column("openings").to_pylist() == expected["openings"].to_pylist()


def test_refuses_mismatches_before_any_work(llama_dir, bert_dir, tmp_path, corpus_file, monkeypatch):
    import saeembed.embedding.kernel as kernel

    def no_weights(*args, **kwargs):
        raise AssertionError("the model's weights must not be loaded for a refused run")

    monkeypatch.setattr(kernel, "load_reader", no_weights)
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    out = tmp_path / "out.parquet"
    with pytest.raises(SAEError, match="width 64 but .* hidden size 32"):
        embed([str(corpus_file)], out, EmbedConfig(model=str(bert_dir), sae=str(sae), layer=LAYER))
    with pytest.raises(SAEError, match=r"output of block 1 .*set layer=1 \(--layer 1\)"):
        embed([str(corpus_file)], out, EmbedConfig(model=str(llama_dir), sae=str(sae), layer=2))
    deep, _ = sae_files.saelens(tmp_path / "deep", 64, arch="topk", layer=9)
    with pytest.raises(ReaderError, match="has 4 layers .*--layer 9 does not exist"):
        embed([str(corpus_file)], out, EmbedConfig(model=str(llama_dir), sae=str(deep)))
    assert not out.exists()


def test_identical_documents_are_embedded_once_and_cache_is_reused(llama_dir, tmp_path, corpus_file, monkeypatch):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS + TEXTS[:3]))
    result, store = run(tmp_path, llama_dir, sae, [str(dup)])
    dense = store.matrix.toarray()
    np.testing.assert_array_equal(dense[:3], dense[len(TEXTS):])
    calls = []
    import saeembed.embedding.kernel as kernel

    real = kernel.encode_chunks
    monkeypatch.setattr(kernel, "encode_chunks", lambda *a, **k: calls.append(1) or real(*a, **k))
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("a fully cached corpus must not load the model's weights")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    again, store_again = run(tmp_path, llama_dir, sae, [str(corpus_file)])
    assert again.n_cached == len(TEXTS) and not calls, "a cached corpus runs no encoder"
    np.testing.assert_array_equal(store_again.matrix.toarray(), dense[: len(TEXTS)])


def test_stores_embedded_differently_are_not_mixed(llama_dir, tmp_path, corpus_file):
    from saeembed.errors import StoreError
    from saeembed.store import check_compatible, read_meta

    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    run(tmp_path / "a", llama_dir, sae, [str(corpus_file)])
    run(tmp_path / "b", llama_dir, sae, [str(corpus_file)], pooling="mean")
    run(tmp_path / "c", llama_dir, sae, [str(corpus_file)])
    a, b, c = (read_meta(tmp_path / x / "out.parquet") for x in "abc")
    check_compatible([("a", a), ("c", c)])
    with pytest.raises(StoreError, match="a and b were embedded differently \\(pooling: 'max' vs 'mean'\\)"):
        check_compatible([("a", a), ("b", b)])


def test_a_bfloat16_encoder_picks_the_latents_the_float32_one_picks(llama_dir, tmp_path, corpus_file):
    """`sae_dtype`: the encoder in bfloat16 on a float32 reader. The same top-k latents up to near-ties, values
    within bfloat16's rounding, recorded in the store, cached apart, and read back by `config_of`."""
    from saeembed.embedding.open_store import config_of

    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    _, exact = run(tmp_path / "f32", llama_dir, sae, [str(corpus_file)])
    result, fast = run(tmp_path / "f32", llama_dir, sae, [str(corpus_file)], sae_dtype="bfloat16")
    assert result.n_cached == 0, "vectors of another encoder dtype are not taken from the cache"
    assert fast.meta["sae"]["compute_dtype"] == "bfloat16" and "compute_dtype" not in exact.meta["sae"]
    a, b = exact.matrix.toarray(), fast.matrix.toarray()
    both = (a > 0) & (b > 0)
    assert both.sum() / max(((a > 0) | (b > 0)).sum(), 1) > 0.95, "the same latents fire"
    np.testing.assert_allclose(b[both], a[both], rtol=3e-2, atol=3e-2 * np.abs(a).max())
    assert config_of(fast).sae_dtype == "bfloat16" and config_of(exact).sae_dtype == "auto"
    from saeembed.errors import StoreError
    from saeembed.store import check_compatible

    with pytest.raises(StoreError, match=r"sae.compute_dtype: None vs 'bfloat16'.*--sae-dtype"):
        check_compatible([("a", exact.meta), ("b", fast.meta)])


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, torch.float32)])
def test_fast_encoder_is_bfloat16_only_where_the_cpu_multiplies_it(monkeypatch, amx, avx512_bf16, expected):
    """A CPU without AMX or AVX512-BF16 emulates bfloat16 several times slower than float32: there `fast`
    keeps the reader's dtype."""
    from types import SimpleNamespace

    from saeembed.embedding.kernel import encoder_dtype

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    reader = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    assert encoder_dtype("fast", reader) == expected
    assert encoder_dtype("auto", reader) == torch.float32 and encoder_dtype("bfloat16", reader) == torch.bfloat16


def test_a_field_missing_from_early_records_is_kept(llama_dir, tmp_path, cache_dir):
    """The store keeps the union of the input's fields: a field only later records have is not dropped."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a first document"}\n{"text": "a second one", "label": 1}\n')
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, layer=LAYER)
    out = tmp_path / "s.parquet"
    embed([str(corpus)], out, EmbedConfig(model=str(llama_dir), sae=str(sae), cache_dir=cache_dir))
    assert load_store(out).frame["label"].to_list() == [None, 1]


# --- bad input and bad outputs are refused before the model is read -------------------------------


def test_a_field_of_mixed_kinds_is_refused_before_the_model_is_read(tmp_path):
    corpus = tmp_path / "mixed.jsonl"
    corpus.write_text('{"text": "a", "x": 1}\n{"text": "b", "x": "s"}\n')
    out = tmp_path / "out.parquet"
    config = EmbedConfig(model=str(tmp_path / "no-such-model"), sae=str(tmp_path / "no-such-sae"), layer=LAYER)
    with pytest.raises(CorpusError) as err:  # not the ReaderError/SAEError the missing model and SAE give
        embed([str(corpus)], out, config)
    message = str(err.value)
    assert f"{corpus}:line 2: field 'x' is text here but a whole number at {corpus}:line 1" in message
    assert "quote the values so they are all text" in message and "\n" not in message
    assert not out.exists()


@pytest.mark.parametrize("case", ["folder", "parent is a file", "unwritable", "disk full", "is an input"])
def test_an_output_that_cannot_be_written_is_refused_before_the_model_is_read(tmp_path, corpus_file, monkeypatch,
                                                                             case):
    import saeembed.outputs as outputs

    out = tmp_path / "out.parquet"
    expected = {"folder": "is a folder; give a file name", "parent is a file": "is a file or a broken link",
                "unwritable": "cannot write in", "disk full": "bytes free on the disk",
                "is an input": "is also an input"}[case]
    inputs = [str(corpus_file)]
    if case == "folder":
        out.mkdir()
    elif case == "parent is a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "out.parquet"
    elif case == "unwritable":  # the tests may run as root, whom chmod does not stop
        monkeypatch.setattr(outputs.tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied")))
    elif case == "disk full":
        monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("U", (), {"free": 4096})())
    else:  # a Parquet corpus given as the output too (the suffix alone would not stop it)
        out = tmp_path / "corpus.parquet"
        pl.read_ndjson(corpus_file).write_parquet(out)
        inputs = [str(out)]
    config = EmbedConfig(model=str(tmp_path / "no-such-model"), sae=str(tmp_path / "no-such-sae"), layer=LAYER)
    with pytest.raises(OutputError) as err:
        embed(inputs, out, config)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert str(out) in str(err.value), "the message names the output"


def test_check_output_accepts_a_missing_parent_and_folder_outputs(tmp_path):
    from saeembed.outputs import check_output

    assert check_output(tmp_path / "new" / "deeper" / "out.parquet") == tmp_path / "new" / "deeper" / "out.parquet"
    assert not (tmp_path / "new").exists(), "the check creates nothing"
    check_output(tmp_path / "sae-folder", folder=True)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="is a file, but a folder is written there"):
        check_output(tmp_path / "a-file", folder=True)
    assert not any(p.name.startswith(".saeembed-write-check") for p in tmp_path.iterdir()), "the probe is removed"


def test_a_read_only_folder_is_refused(tmp_path):
    import os

    from saeembed.outputs import check_output

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user whom permissions do not stop (root)")
        with pytest.raises(OutputError, match=f"cannot write in {folder}"):
            check_output(folder / "out.parquet")
    finally:
        folder.chmod(0o700)


def test_every_field_is_stored_as_written(llama_dir, tmp_path, cache_dir):
    """Fields that mix whole numbers and decimals, nulls, nested lists and objects, and names the store
    uses itself all reach the store; `messages` next to a text is kept too."""
    records = [
        {"text": "a first document", "n": 1, "tags": [], "meta": {"k": 1}, "indices": "mine",
         "input_indices": "also mine", "messages": [{"role": "user", "content": "hi"}]},
        {"text": "a second one", "n": 2.5, "tags": ["x", "y"], "meta": {}, "late": None},
        {"text": "a third", "n": None, "tags": None, "meta": {"k": None, "j": [True]}, "late": "here"},
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, layer=LAYER)
    out = tmp_path / "s.parquet"
    embed([str(corpus)], out, EmbedConfig(model=str(llama_dir), sae=str(sae), cache_dir=cache_dir))
    frame = load_store(out).frame
    assert frame["n"].to_list() == [1.0, 2.5, None]
    assert frame["tags"].to_list() == [[], ["x", "y"], None]
    assert frame["meta"].to_list() == [{"k": 1, "j": None}, {"k": None, "j": None}, {"k": None, "j": [True]}]
    assert frame["input_indices"].to_list() == ["also mine", None, None], "the input's own name is kept"
    assert frame["input_input_indices"].to_list() == ["mine", None, None], "renamed off the store's column and it"
    assert frame["input_messages"].to_list()[0] == [{"role": "user", "content": "hi"}]
    assert frame["late"].to_list() == [None, None, "here"]


def test_embed_records_names_the_record(tmp_path):
    from saeembed.embedding.open_store import embed_records
    from saeembed.errors import CorpusError as Error

    config = EmbedConfig(model=str(tmp_path / "no-such-model"), sae=str(tmp_path / "no-such-sae"), layer=LAYER)
    with pytest.raises(Error, match=r"record 1: field 'text' holds a lone surrogate"):  # 0-based, like ids
        embed_records([{"text": "fine"}, {"text": "bad \ud800"}], config)
    with pytest.raises(Error, match="the field 'when' cannot be stored"):
        embed_records([{"text": "fine", "when": object()}], config)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 40)), max_size=200), st.integers(1, 8))
def test_count_statistics_are_numpys_per_chunk(tokens, n_chunks):
    """The vectorised per-chunk statistics equal numpy's mean, max and linear percentiles, chunk by chunk."""
    from saeembed.embedding.pool import count_stats

    segment = np.array([min(s, n_chunks - 1) for s, _ in tokens], np.int64)
    per_token = np.array([c for _, c in tokens], np.int64)
    got = count_stats(per_token, segment, n_chunks)
    for chunk in range(n_chunks):
        counts = per_token[segment == chunk]
        want = [counts.mean(), counts.max(), *np.percentile(counts, [10, 50, 90])] if len(counts) else [0.0] * 5
        np.testing.assert_allclose(got[chunk], want, atol=1e-4)


def test_freed_heap_is_handed_back_every_few_batches_not_after_each(monkeypatch):
    # Releasing after every batch made the next batch fault its memory in again (6-9% of a per-token embed);
    # never releasing lets resident memory creep up with the corpus.
    from saeembed.embedding import reader

    released = []
    monkeypatch.setattr(reader, "release_freed_memory", lambda: released.append(True))
    keeper = reader.HeapKeeper()
    for _ in range(3 * keeper.EVERY + 1):
        keeper.after_batch()
    assert len(released) == 3
