"""The reader: a transformers model cut after the hooked block, its tokenizer, and the hook."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from saeembed.embedding.config import LongMode
from saeembed.embedding.corpus import Document
from saeembed.errors import ReaderError, first_line
from saeembed.hashing import fingerprint

log = logging.getLogger(__name__)

_LAYER_LIST_NAMES = ("layers", "h", "layer", "blocks")
DEFAULT_MAX_TOKENS = 2048


@dataclass(frozen=True)
class ReaderSpec:
    """What the model's config says, read before any weights are loaded."""

    model: str
    layer: int
    n_layers: int
    hidden_size: int
    model_type: str
    revision: str | None


@dataclass
class Chunk:
    """One forward-pass window of a document: token ids and which of them are pooled."""

    doc: int  # position of the document in its window
    ids: list[int]
    pooled: np.ndarray  # int64 [n]: positions in `ids` of the tokens that are pooled
    spans: np.ndarray  # int32 [n, 2]: character span in the document's text of each pooled token


@dataclass
class PreparedDoc:
    """A document as the model reads it: the exact text, and its chunks."""

    text: str
    chunks: list[Chunk]
    n_tokens: int  # tokens pooled, over all chunks
    truncated: bool


def inspect_model(model: str, layer: int, *, revision: str | None = None,
                  trust_remote_code: bool = False) -> tuple[ReaderSpec, Any]:
    """Read the model's config and check `layer` exists; returns (spec, config). No weights."""
    from transformers import AutoConfig

    _refuse_pickled_weights(model)
    where, gguf = _source(model)
    try:
        if gguf:  # parsing a GGUF file's metadata takes seconds; a run asks for the config twice
            file = Path(where) / gguf["gguf_file"]
            with _gguf_errors(model):
                config = copy.deepcopy(_gguf_config(str(file), file.stat().st_mtime_ns, file.stat().st_size))
        else:
            config = AutoConfig.from_pretrained(where, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ReaderError(f"{model} needs custom code; set trust_remote_code=True (--trust-remote-code) if you "
                              f"trust it") from None
        raise ReaderError(f"cannot read the config of model {model!r}: {exc}") from None
    except OSError as exc:
        raise ReaderError(f"cannot load model {model!r}: {exc}. Pass a local folder or a hub id "
                          f"reachable from this machine") from None
    if getattr(config, "is_encoder_decoder", False):
        raise ReaderError(f"{model} is an encoder-decoder model; saeembed reads decoder-only "
                          f"(Llama, Gemma, Qwen, Mistral, GPT-2, GPT-NeoX) or BERT-style encoders")
    text_config = getattr(config, "text_config", None) or config
    n_layers = getattr(text_config, "num_hidden_layers", None)
    if n_layers is None:
        raise ReaderError(f"{model}: the config names no num_hidden_layers; this architecture is not supported")
    if not 0 <= layer < n_layers:
        raise ReaderError(f"{model} has {n_layers} layers (0..{n_layers - 1}); --layer {layer} does not "
                          f"exist. --layer L reads the output of block L, 0-based")
    revision = getattr(config, "_commit_hash", None) or revision
    spec = ReaderSpec(model=str(model), layer=layer, n_layers=n_layers, hidden_size=text_config.hidden_size,
                      model_type=config.model_type, revision=revision)
    return spec, config


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` means CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means bf16 on GPU and fp32 on CPU (CPU bf16 matmuls are slow on most machines)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ReaderError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


class _StopForward(Exception):
    """Raised by the hook once the hooked block has run: nothing after it is needed."""


class Reader:
    """A model cut after block `layer`, returning that block's output for batches of chunks.

    The weights load on the first forward pass, so a run whose documents are all cached never
    reads them; config, tokenizer and every compatibility check come first, before any work.
    """

    def __init__(self, spec: ReaderSpec, load_model: Callable[[], torch.nn.Module], tokenizer: Any,
                 device: torch.device, dtype: torch.dtype, max_tokens: int, fingerprint_: str):
        self.spec, self.tokenizer = spec, tokenizer
        self.device, self.dtype, self.max_tokens = device, dtype, max_tokens
        self.fingerprint = fingerprint_
        self._load_model = load_model
        self._model: torch.nn.Module | None = None
        self._captured: torch.Tensor | None = None
        self.pad_id = _pad_id(tokenizer)
        self._special_ids = np.asarray(sorted(tokenizer.all_special_ids), dtype=np.int64)
        self.prefix, self.suffix = _special_affixes(tokenizer)
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    @property
    def model(self) -> torch.nn.Module:
        """The cut model, loaded on first use, with the hook on block `layer`."""
        if self._model is None:
            self._model = self._load_model()
            _find_block(self._model, self.spec.layer).register_forward_hook(self._capture)
        return self._model

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # Decoder layers in transformers 5 return a tensor; older ones and encoders a tuple.
        self._captured = output if isinstance(output, torch.Tensor) else output[0]
        raise _StopForward

    @torch.inference_mode()
    def hidden_states(self, batch: list[Chunk]) -> torch.Tensor:
        """The hooked block's output [B, S, d_model] for right-padded chunks."""
        width = max(len(c.ids) for c in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, chunk in enumerate(batch):
            ids[row, : len(chunk.ids)] = torch.tensor(chunk.ids)
            mask[row, : len(chunk.ids)] = 1
        self._captured = None
        try:
            self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        except _StopForward:
            pass
        if self._captured is None:
            raise ReaderError(f"the hook on block {self.spec.layer} never fired; this architecture is not supported")
        return self._captured

    def token_activations(self, batch: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations [n, d_model] of the batch's pooled tokens, and each token's row in `batch`."""
        hidden = self.hidden_states(batch)
        counts = [len(c.pooled) for c in batch]
        rows = torch.from_numpy(np.repeat(np.arange(len(batch)), counts)).to(hidden.device)
        cols = torch.from_numpy(np.concatenate([c.pooled for c in batch])).to(hidden.device)
        return hidden[rows, cols], rows

    def prepare(self, doc: Document, *, pool_roles: tuple[str, ...] | None = None,
                as_chat: str | None = None, long: LongMode = "chunk", doc_slot: int = 0) -> PreparedDoc:
        """Render, tokenise and split a document into chunks that fit the context."""
        text, pooled_ranges, templated = self.render(doc, as_chat, pool_roles)
        # verbose=False: long documents are chunked below, so the "longer than maximum" warning misleads.
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = enc["input_ids"]
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int32).reshape(-1, 2)
        pooled = (offsets[:, 1] > offsets[:, 0]) & ~np.isin(np.asarray(ids, dtype=np.int64), self._special_ids)
        if pooled_ranges is not None:
            in_range = [(offsets[:, 0] < hi) & (offsets[:, 1] > lo) for lo, hi in pooled_ranges]
            pooled &= np.any(in_range, 0) if in_range else False
        keep = np.flatnonzero(pooled)
        body = self.max_tokens - len(self.prefix) - len(self.suffix)
        starts = range(0, max(len(ids), 1), body)
        truncated = long == "truncate" and len(ids) > body
        if long == "truncate":
            starts = starts[:1]
        chunks: list[Chunk] = []
        for n, start in enumerate(starts):
            # Template-rendered chats carry their own BOS in the text; later chunks need it again.
            head = self.prefix if (not templated or n > 0) else []
            tail = self.suffix if not templated else []
            inside = keep[(keep >= start) & (keep < start + body)]
            chunks.append(Chunk(doc_slot, head + ids[start: start + body] + tail,
                                inside - start + len(head), offsets[inside]))
        n_tokens = sum(len(c.pooled) for c in chunks)
        return PreparedDoc(text, chunks, n_tokens, truncated)

    def render(self, doc: Document, as_chat: str | None = None, pool_roles: tuple[str, ...] | None = None,
               ) -> tuple[str, list[tuple[int, int]] | None, bool]:
        """The exact text the model reads, the character ranges to pool (None: all), and whether
        a chat template rendered it."""
        messages = doc.messages or ([{"role": as_chat, "content": doc.text}] if as_chat else None)
        if messages is None:
            if doc.text is None:  # corpus readers never make one; a Document built by hand might
                raise ReaderError(f"{doc.where or doc.id}: the document has neither text nor messages")
            return doc.text, None, False
        if self.has_chat_template:
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            except Exception as exc:  # noqa: BLE001 - templates raise jinja errors of their own
                raise ReaderError(f"{doc.where}: the chat template of {self.spec.model} rejects this "
                                  f"conversation ({exc})") from None
        else:
            # Encoders and base models have no template: a plain "role: content" transcript.
            text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
        if pool_roles is None:
            return text, None, self.has_chat_template
        ranges, cursor = [], 0
        for message in messages:
            content = message["content"].strip()
            at = text.find(content, cursor)
            if at < 0:
                raise ReaderError(f"{doc.where}: cannot locate a {message['role']} message in the rendered chat "
                                  f"template, so its tokens cannot be pooled separately")
            if message["role"] in pool_roles:
                ranges.append((at, at + len(content)))
            cursor = at + len(content)
        return text, ranges, self.has_chat_template


def load_reader(model: str, layer: int, *, device: str = "auto", dtype: str = "auto",
                revision: str | None = None, trust_remote_code: bool = False,
                max_tokens: int | None = None) -> Reader:
    """Load `model` with only its first `layer + 1` blocks and a hook on block `layer`.

    Examples:
        >>> reader = load_reader("meta-llama/Llama-3.1-8B-Instruct", 19)  # doctest: +SKIP
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    spec, config = inspect_model(model, layer, revision=revision, trust_remote_code=trust_remote_code)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    _cut_config(getattr(config, "text_config", None) or config, layer + 1)
    where, gguf = _source(model)
    try:
        with _gguf_errors(model) if gguf else contextlib.nullcontext():
            tokenizer = AutoTokenizer.from_pretrained(where, **gguf, revision=revision,
                                                      trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ReaderError(f"cannot load the tokenizer of {model!r}: {exc}") from None
    if not getattr(tokenizer, "is_fast", True):
        raise ReaderError(f"{model}: saeembed needs a fast tokenizer (character offsets for highlights)")

    def load_weights() -> torch.nn.Module:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused later blocks are reported as unexpected keys
        hf_logging.disable_progress_bar()  # saeembed draws its own progress
        try:
            # safetensors (or GGUF, plain tensors too) only: a pickled pytorch_model.bin can run code when read
            only_safetensors: dict[str, Any] = {} if gguf else {"use_safetensors": True}
            with _quiet_gguf(), _gguf_errors(model) if gguf else contextlib.nullcontext():
                net = AutoModel.from_pretrained(where, **gguf, config=config, dtype=torch_dtype, revision=revision,
                                                trust_remote_code=trust_remote_code, **only_safetensors)
        except OSError as exc:
            raise ReaderError(f"cannot load model {model!r}: {first_line(exc, 300)}") from None
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        return net.eval().to(torch_device)

    text_config = getattr(config, "text_config", None) or config
    limits = [DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
              getattr(text_config, "max_position_embeddings", None) or 10**9,
              tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else 10**9]
    return Reader(spec, load_weights, tokenizer, torch_device, torch_dtype, min(limits),
                  _model_fingerprint(model, spec))


@contextlib.contextmanager
def _gguf_errors(model: str) -> Iterator[None]:
    """A GGUF file the gguf package cannot parse (cut short, damaged) fails with struct or index errors deep
    in it: one line naming the file instead."""
    try:
        yield
    except (ReaderError, OSError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's own errors (struct.error, IndexError, KeyError ...)
        raise ReaderError(f"cannot read the GGUF file {model}: {first_line(exc, 200)}; it may be cut short or "
                          f"damaged: download or install it again") from None


@contextlib.contextmanager
def _quiet_gguf() -> Iterator[None]:
    """transformers draws its own tqdm bar while it dequantises a GGUF file, whatever its progress-bar
    setting; saeembed draws its own progress, so that bar is switched off while the weights load."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


@functools.lru_cache(maxsize=4)
def _gguf_config(file: str, mtime_ns: int, size: int) -> Any:
    """The transformers config of a GGUF file, parsed once per file version (callers get a copy: the reader
    cuts its layers)."""
    from transformers import AutoConfig

    path = Path(file)
    return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)


def gguf_file(model: str) -> Path | None:
    """The model as a GGUF file (`folder/name.gguf`, e.g. the offline default's reader, shipped in a package),
    or None for a hub id or a transformers folder."""
    path = Path(model)
    return path if path.suffix.lower() == ".gguf" and path.is_file() else None


def _source(model: str) -> tuple[str, dict[str, Any]]:
    """Where `from_pretrained` reads `model` and the extra argument it needs: a GGUF file is read from its
    folder by name (transformers dequantises it to the compute dtype with the `gguf` package)."""
    file = gguf_file(model)
    return (str(file.parent), {"gguf_file": file.name}) if file else (model, {})


def _refuse_pickled_weights(model: str) -> None:
    """A local folder whose weights are only pickled files (pytorch_model.bin, *.pt) is refused before
    anything is read: unpickling runs code, and saeembed never unpickles."""
    folder = Path(model)
    if not folder.is_dir():
        return
    files = [p.name for p in folder.iterdir() if p.is_file()]
    pickled = [name for name in files if name.endswith((".bin", ".pt", ".pth", ".ckpt")) and "tokenizer" not in name]
    if pickled and not any(name.endswith(".safetensors") for name in files):
        raise ReaderError(f"{model} holds its weights only as pickled files ({', '.join(sorted(pickled)[:3])}), "
                          f"which saeembed never reads (unpickling runs code); save the model as safetensors "
                          f"(`model.save_pretrained(folder, safe_serialization=True)` where you trust the file)")


def _cut_config(config: Any, n_layers: int) -> None:
    config.num_hidden_layers = n_layers
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list):
        config.layer_types = layer_types[:n_layers]  # validation wants one type per layer


def _find_block(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == layer + 1
             and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES and "vision" not in name]
    if not found:
        raise ReaderError(f"cannot find the block list of {type(model).__name__}; this architecture is "
                          f"not supported")
    return min(found, key=lambda item: len(item[0]))[1][layer]


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS]..[SEP], <bos>..). A tokenizer
    that puts nothing before it but names a BOS token (SmolLM2, GPT-2) gets that token in front: a
    decoder's first position soaks up attention and carries outlier activations, so without it the
    document's first word would be read as that outlier (it is never pooled either way)."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for at in range(len(full) - len(bare) + 1):
        if full[at: at + len(bare)] == bare:
            prefix, suffix = full[:at], full[at + len(bare):]
            if not prefix and tokenizer.bos_token_id is not None:
                prefix = [int(tokenizer.bos_token_id)]
            return prefix, suffix
    return [], []


def _model_fingerprint(model: str, spec: ReaderSpec) -> str:
    """Hub models are identified by their commit; local folders by their weight files' contents."""
    folder = Path(model)
    if gguf_file(model):
        return fingerprint([folder])
    if folder.is_dir():
        weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
        return fingerprint(weights) if weights else ""
    return spec.revision or ""


# -- batching ---------------------------------------------------------------------------------------

# CPU attention materialises [rows, heads, S, S] scores; capping rows x S^2 at this many times the
# token budget makes a batch of long documents cost no more memory than one of 128-token documents.
_CPU_ATTENTION_WIDTH = 128


def length_sorted_batches(chunks: list[Chunk], batch_tokens: int, max_docs: int,
                          device: torch.device | None = None) -> list[list[Chunk]]:
    """Longest first; a batch grows while rows x its longest chunk stays within the token budget
    (and, on CPU, rows x longest^2 within the attention budget)."""
    ordered = sorted(chunks, key=lambda c: len(c.ids), reverse=True)
    attention_budget = batch_tokens * _CPU_ATTENTION_WIDTH if device is None or device.type == "cpu" else None
    batches: list[list[Chunk]] = []
    current: list[Chunk] = []
    for chunk in ordered:
        width = len(current[0].ids) if current else len(chunk.ids)
        rows = len(current) + 1
        if current and (rows * width > batch_tokens or len(current) >= max_docs
                        or (attention_budget and rows * width * width > attention_budget)):
            batches.append(current)
            current = []
        current.append(chunk)
    if current:
        batches.append(current)
    return batches


def release_freed_memory() -> None:
    """Hand freed heap back to the OS. glibc keeps the memory of freed CPU tensors in its arenas, so
    without this the resident size creeps up batch after batch and peak memory grows with the corpus.
    It costs more than its own milliseconds: the next batch page-faults that memory in again (6-9% of
    a per-token embed when done after every batch), so `HeapKeeper` calls it every few batches."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed buffers too
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


class HeapKeeper:
    """Releases freed heap after every `EVERY`-th batch: memory stays bounded (what creeps up in between is
    handed back), and most batches reuse the memory the one before freed instead of faulting it in again."""

    EVERY = 8

    def __init__(self) -> None:
        self.batches = 0

    def after_batch(self) -> None:
        self.batches += 1
        if self.batches % self.EVERY == 0:
            release_freed_memory()
