"""train-sae: the TopK recipe learns, AuxK revives dead latents, runs resume, outputs load anywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from commands.app import app
from saeembed import EmbedConfig, embed, load_sae, load_store
from saeembed.errors import ConfigError, SAEError
from saeembed.train.activations import ShuffleBuffer
from saeembed.train.topk import TopKSAE, TopKTrainer, evaluate
from saeembed.train.train import CHECKPOINT, TrainConfig, train_sae
from tests.conftest import TEXTS


def sparse_data(n: int, d: int = 16, n_features: int = 64, active: int = 3, seed: int = 0) -> torch.Tensor:
    """Each point is a non-negative mix of `active` of `n_features` random unit directions."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d, generator=g)
    features /= features.norm(dim=-1, keepdim=True)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:active] for _ in range(n)])
    return torch.zeros(n, n_features).scatter(1, idx, torch.rand(n, active, generator=g) + 0.5) @ features + 2.0


def test_recipe_recovers_sparse_structure():
    x = sparse_data(8192)
    sae = TopKSAE(16, 128, k=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    trainer = TopKTrainer(sae, lr=3e-3, aux_k=8, aux_coef=1 / 32, dead_after_tokens=2048)
    before = evaluate(sae, x[:1024])["fvu"]
    for _epoch in range(15):
        for batch in x[torch.randperm(len(x))].split(256):
            trainer.step(batch)
    after = evaluate(sae, x[:1024])
    assert before > 0.9 and after["fvu"] < 0.15 and after["l0"] <= 4
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(128), atol=1e-5, rtol=0)


def test_auxk_gives_dead_latents_gradient():
    x = sparse_data(512)
    sae = TopKSAE(16, 64, k=2, generator=torch.Generator().manual_seed(0))
    trainer = TopKTrainer(sae, lr=1e-3, aux_k=8, aux_coef=1 / 32, dead_after_tokens=100)
    never_chosen = torch.ones(64, dtype=torch.bool)
    with torch.no_grad():
        never_chosen[sae(x)[2].unique()] = False
    assert never_chosen.any()
    trainer.tokens_since_fired[never_chosen] = 1000  # dead
    enc_before = sae.W_enc.detach().clone()
    stats = trainer.step(x)
    assert stats.aux > 0 and stats.dead_fraction == pytest.approx(float(never_chosen.float().mean()))
    moved = (sae.W_enc.detach() - enc_before).abs().sum(0) > 0
    assert moved[never_chosen].any(), "AuxK must move dead latents' encoders"


def test_shuffle_buffer_emits_every_token_once_and_mixes_windows():
    buffer = ShuffleBuffer(capacity=64, batch_size=8, generator=torch.Generator().manual_seed(0))
    windows = [torch.arange(i * 20, (i + 1) * 20, dtype=torch.float32)[:, None] for i in range(10)]
    batches = [b for w in windows for b in buffer.add(w)] + list(buffer.drain())
    seen = torch.cat(batches).flatten()
    assert len(seen) == 200 and len(set(seen.tolist())) == 200
    assert any(len({int(v) // 20 for v in b.flatten()}) > 2 for b in batches), "batches mix windows"


@pytest.fixture
def train_corpus(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"{t} ({i})"}) + "\n" for i in range(12) for t in TEXTS))
    return path


def small_config(llama_dir, **overrides) -> TrainConfig:
    return TrainConfig(model=str(llama_dir), layer=1, **{
        "latents": 128, "k": 8, "batch_size": 256, "buffer_tokens": 1024, "window_docs": 16, "epochs": 2,
        "holdout_fraction": 0.1, "eval_every_steps": 5, "lr": 3e-3, **overrides})


def test_trained_sae_is_saelens_and_embeds(llama_dir, train_corpus, tmp_path):
    result = train_sae([str(train_corpus)], tmp_path / "sae", small_config(llama_dir))
    assert result.steps > 10 and result.eval["fvu"] < 0.6 and result.eval["l0"] <= 8
    assert not (tmp_path / "sae" / CHECKPOINT).exists()
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 8
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cfg["metadata"]["saeembed"]["training_data"] == [str(train_corpus)]
    sae = load_sae(tmp_path / "sae")
    assert (sae.info.format, sae.info.layer, sae.d_sae) == ("saelens", 1, 128)
    out = tmp_path / "emb.parquet"
    embed([str(train_corpus)], out, EmbedConfig(model=str(llama_dir), sae=str(tmp_path / "sae"),
                                                cache_dir=tmp_path / "cache"))
    assert load_store(out).matrix.nnz > 0


def test_interrupted_training_resumes_from_its_checkpoint(llama_dir, train_corpus, tmp_path):
    out = tmp_path / "sae"
    config = small_config(llama_dir, checkpoint_seconds=0.0)
    steps = []

    def stop_late(progress):
        steps.append(progress.step)
        if progress.epoch == 0 and (out / CHECKPOINT).exists() and progress.step >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae([str(train_corpus)], out, config, on_progress=stop_late)
    assert (out / CHECKPOINT).exists() and not (out / "cfg.json").exists()
    with pytest.raises(SAEError, match="different training run"):
        train_sae([str(train_corpus)], out, small_config(llama_dir, latents=64))
    result = train_sae([str(train_corpus)], out, config)
    assert 0 < result.resumed_from_step <= steps[-1]
    assert result.steps > result.resumed_from_step and (out / "cfg.json").exists()


def test_cli_train_sae_with_activation_cache(llama_dir, train_corpus, tmp_path):
    args = ["train-sae", str(train_corpus), "-o", str(tmp_path / "sae"), "--model", str(llama_dir), "--layer", "1",
            "--latents", "64", "--k", "4", "--batch-size", "128", "--activations-dir", str(tmp_path / "acts"),
            "--save-dtype", "float16", "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    figures = json.loads(first.stdout)
    assert figures["steps"] > 0 and 0 <= figures["dead_fraction"] <= 1
    shards = list((tmp_path / "acts").rglob("window-*.npy"))
    assert shards and np.load(shards[0]).dtype == np.float16
    again = CliRunner().invoke(app, args[:3] + [str(tmp_path / "sae2")] + args[4:])
    assert again.exit_code == 0 and json.loads(again.stdout)["fvu"] == pytest.approx(figures["fvu"], rel=1e-5), \
        "the cached activations reproduce the run"


def test_document_sae_trains_embeds_k_latents_per_document_whatever_the_length(llama_dir, train_corpus, tmp_path):
    config = small_config(llama_dir, reads="document", latents=64, k=4, batch_size=16, buffer_tokens=64, epochs=20)
    result = train_sae([str(train_corpus)], tmp_path / "sae", config)
    assert result.steps >= 20 and result.eval["l0"] <= 4
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["metadata"]["saeembed"]["reads"] == "document"
    assert load_sae(tmp_path / "sae").info.reads == "document"
    short, long = TEXTS[0], " ".join(TEXTS) * 3
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in [short, long]))
    out = tmp_path / "docs.parquet"
    embed([str(corpus)], out, EmbedConfig(model=str(llama_dir), sae=str(tmp_path / "sae"), max_tokens=32,
                                          cache_dir=tmp_path / "cache"))
    store = load_store(out)
    active = np.diff(store.matrix.indptr)
    assert active[0] == active[1] == 4, "a document-level SAE gives every document k latents"
    assert store.meta["pooling"] == "document"
    assert store.frame["n_tokens"][1] > 32, "the long document was read in several chunks"
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": m}) + "\n" for m in [
        [{"role": "user", "content": TEXTS[0]}, {"role": "assistant", "content": TEXTS[1]}],
        [{"role": "user", "content": TEXTS[2]}]]))  # nothing of the assistant's to pool
    embed([str(chats)], tmp_path / "chats.parquet", EmbedConfig(model=str(llama_dir), sae=str(tmp_path / "sae"),
                                                                pool_roles=("assistant",), cache_dir=tmp_path / "c2"))
    assert np.diff(load_store(tmp_path / "chats.parquet").matrix.indptr).tolist() == [4, 0]
    text = store.frame["text"][1]
    for start, end in zip(store.peak_start[store.matrix.indptr[1]: store.matrix.indptr[2]],
                          store.peak_end[store.matrix.indptr[1]: store.matrix.indptr[2]]):
        assert 0 <= start < end <= len(text), "every latent points at a token of the document"


def test_document_sae_codes_equal_the_sae_of_the_mean_activation(llama_dir, train_corpus, tmp_path):
    """The stored code is exactly the SAE applied to the unit-norm mean of the block's outputs over all the
    document's tokens, in one window or across chunks."""
    from saeembed.embedding.corpus import Document
    from saeembed.embedding.pool import unit_rows
    from saeembed.embedding.reader import load_reader

    train_sae([str(train_corpus)], tmp_path / "sae", small_config(llama_dir, reads="document", latents=32, k=4,
                                                                  batch_size=16, buffer_tokens=64, epochs=2))
    text = " ".join(TEXTS)
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps({"text": text}) + "\n")
    sae = load_sae(tmp_path / "sae")
    for max_tokens in (None, 24):
        reader = load_reader(str(llama_dir), 1, max_tokens=max_tokens)
        chunks = reader.prepare(Document(id="0", text=text)).chunks
        x, _ = reader.token_activations(chunks)
        expected = sae.encode(unit_rows(x.mean(0, keepdim=True)))[0]
        out = tmp_path / f"one-{max_tokens}.parquet"
        embed([str(corpus)], out, EmbedConfig(model=str(llama_dir), sae=str(tmp_path / "sae"), max_tokens=max_tokens,
                                              cache_dir=tmp_path / f"cache-{max_tokens}"))
        got = torch.from_numpy(load_store(out).matrix.toarray()[0]).float()
        assert max_tokens is None or len(chunks) > 2
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)


def test_matryoshka_prefix_alone_reconstructs_better():
    """With nested prefixes the first latents must reconstruct on their own, so they learn broad directions."""
    x = sparse_data(4096, n_features=64, active=4)

    def prefix_fvu(prefixes: tuple[int, ...]) -> float:
        sae = TopKSAE(16, 128, k=8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            sae.b_dec.copy_(x.mean(0))
        trainer = TopKTrainer(sae, lr=3e-3, aux_k=8, aux_coef=1 / 32, dead_after_tokens=2048, prefixes=prefixes)
        for _epoch in range(8):
            for batch in x[torch.randperm(len(x), generator=torch.Generator().manual_seed(_epoch))].split(256):
                trainer.step(batch)
        with torch.no_grad():
            _, _, indices, values = sae(x)
            head = sae.decode_sparse(indices, values * (indices < 16)) + sae.b_dec
        return float((head - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    assert prefix_fvu((16,)) < 0.8 * prefix_fvu(())


def test_matryoshka_prefixes_are_checked(llama_dir):
    with pytest.raises(ConfigError, match="matryoshka"):  # at construction, before any corpus or model
        small_config(llama_dir, matryoshka=(16, 500))


def test_a_damaged_checkpoint_is_one_line_saying_to_delete_it(llama_dir, train_corpus, tmp_path):
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(SAEError, match="checkpoint.safetensors is damaged .*delete it"):
        train_sae([str(train_corpus)], tmp_path / "sae", small_config(llama_dir))
