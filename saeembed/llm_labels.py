"""The paper's relabelling through any OpenAI-compatible chat endpoint (vLLM, Ollama, hosted APIs).

For each latent: show the LLM 10 documents where it fires (peak token marked << >>) and 10 where it
does not, ask for a short label; then score the label by detection on held-out positives and
negatives (the LLM judges, for each, whether the label applies) and keep it only if accuracy >= 0.75.
Calls run concurrently with retries and backoff, and every answer is cached on disk by the hash of
its request, so an interrupted run does not pay twice. The API key comes from the environment and
is never logged or stored.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saeembed.errors import SaeEmbedError
from saeembed.hashing import text_key
from saeembed.labels import Labels, marked_context, peak_span, top_documents
from saeembed.store import Store

log = logging.getLogger(__name__)
KEEP_ACCURACY = 0.75


class LLMError(SaeEmbedError):
    """The endpoint cannot be reached or keeps failing."""


@dataclass
class LLMClient:
    """Chat completions over HTTP, with retries and an on-disk answer cache."""

    model: str
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    cache_dir: Path | None = None
    retries: int = 4
    timeout: float = 60.0
    backoff: float = 1.0

    def complete(self, prompt: str, max_tokens: int = 40) -> str:
        body = {"model": self.model, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt}]}
        key = text_key(self.base_url, json.dumps(body, sort_keys=True))
        cached = self.cache_dir / f"{key}.json" if self.cache_dir else None
        if cached and cached.exists():
            return json.loads(cached.read_text())["answer"]
        answer = self._post(body)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"answer": answer}))
            os.replace(tmp, cached)
        return answer

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, json.dumps(body).encode(), headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())["choices"][0]["message"]["content"].strip()
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code not in (408, 409, 429) and exc.code < 500:
                    raise LLMError(f"{url} refused the request ({last}); check --llm-model and the key in "
                                   f"${self.api_key_env}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, ValueError) as exc:
                last = type(exc).__name__
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        raise LLMError(f"{url} failed {self.retries + 1} times (last: {last}); is the server up?")


def _examples(store: Store, latent: int, n: int, rng: np.random.Generator) -> tuple[list[str], list[int], list[int]]:
    """Marked contexts of the top 2n positives (n to show, n held out), and 2n random negatives."""
    positives = [row for row, _ in top_documents(store, latent, 2 * n)]
    active = set(store.matrix.getcol(latent).tocoo().row.tolist())
    inactive = [r for r in rng.permutation(store.n_docs)[: 4 * n + len(active)].tolist() if r not in active][: 2 * n]
    texts = store.frame["text"].to_list()
    shown = [marked_context(texts[r], peak_span(store, r, latent) or (0, 0)) for r in positives[:n]]
    return shown, positives[n:], inactive


def describe_prompt(positives: list[str], negatives: list[str]) -> str:
    lines = ["Below are text excerpts. In the first group a hidden feature is active; the token where it is",
             "strongest is marked << >>. In the second group it is not active. Reply with a short label",
             "(at most 8 words) for what the feature detects, and nothing else.", "", "ACTIVE:"]
    lines += [f"{i + 1}. {text}" for i, text in enumerate(positives)]
    lines += ["", "NOT ACTIVE:"] + [f"{i + 1}. {text[:300]}" for i, text in enumerate(negatives)]
    return "\n".join(lines)


def detect_prompt(label: str, text: str) -> str:
    return (f"Feature description: {label}\nText: {text[:600]}\n"
            f"Does the feature description apply to this text? Answer yes or no.")


def llm_labels(store: Store, client: LLMClient, latents: list[int], *, n_examples: int = 10,
               concurrency: int = 8, seed: int = 0) -> Labels:
    """Label `latents` with the LLM and keep the labels whose detection accuracy is >= 0.75."""
    texts = store.frame["text"].to_list()

    def one(latent: int) -> tuple[int, str, float] | None:
        rng = np.random.default_rng(seed + latent)
        shown, held_pos, negatives = _examples(store, latent, n_examples, rng)
        if not held_pos or not negatives:
            return None  # too rare to label and test
        label = client.complete(describe_prompt(shown, [texts[r] for r in negatives[:n_examples]])).strip(" .\"'")
        held_neg = negatives[n_examples:] or negatives[:n_examples]
        judged = [(client.complete(detect_prompt(label, texts[r]), max_tokens=3).lower().startswith("yes"), truth)
                  for rows, truth in ((held_pos, True), (held_neg, False)) for r in rows]
        accuracy = sum(said == truth for said, truth in judged) / len(judged)
        return latent, label, accuracy

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = [r for r in pool.map(one, latents) if r is not None]
    kept = [(latent, label, acc) for latent, label, acc in results if acc >= KEEP_ACCURACY]
    log.info("LLM labels: %d of %d kept (detection accuracy >= %.2f)", len(kept), len(results), KEEP_ACCURACY)
    return Labels(store.d_sae, {latent: label for latent, label, _ in kept},
                  {latent: f"llm:{client.model}" for latent, _, _ in kept}, {latent: acc for latent, _, acc in kept})
