"""The paper's relabelling through any OpenAI-compatible chat endpoint (vLLM, Ollama, hosted APIs).

For each latent: show the LLM 10 documents where it fires (peak token marked << >>) and 10 where it
does not, ask for a short label; then score the label by detection on held-out positives and
negatives (the LLM judges, for each, whether the label applies) and keep it only if its balanced
accuracy (the mean of the hit rates on positives and on negatives) is >= 0.75.
Calls run concurrently with retries and backoff, and every answer is cached on disk by the hash of
its request, so an interrupted run does not pay twice. The API key comes from the environment and
is never logged or stored.

What the endpoint does wrong ends in one LLMError line saying what it did, never a traceback:
- it cannot be reached, or answers 408/409/425/429/5xx: retried `retries` times with exponential
  backoff, or after the `Retry-After` the server gives (seconds or an HTTP date) on 429/503; a
  Retry-After longer than `max_wait` is an error at once ("try again later");
- it does not answer within `timeout` seconds (the whole request: connecting, the server thinking,
  reading the answer): retried once, then an error suggesting --llm-timeout;
- it answers 200 with something that is not a chat completion (an HTML page, a body that is not
  JSON, a JSON list, `choices: []`, `content: null`, an empty answer): described as what it was,
  retried `bad_answer_retries` times, then an error;
- it refuses the request (another 4xx): an error at once, with the server's own message.
The first error stops the whole run: requests not yet sent are cancelled.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from saeembed.atomic import write_text
from saeembed.errors import LLMError, at_least
from saeembed.hashing import text_key
from saeembed.labels import LabelError, Labels
from saeembed.settings import check_fields, refuse, setting
from saeembed.spans import marked_context, peak_span, top_documents
from saeembed.store import Store

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)
KEEP_ACCURACY = 0.75
MAX_ANSWER_BYTES = 8 << 20  # a chat completion of a few tokens is a few kB; more is not one
RETRY_STATUS = (408, 409, 425, 429)  # and every 5xx: worth trying again
Waiting = Callable[[str], None]  # told, as one line, why a request is waiting (a retry, Retry-After)


class _Timeout(Exception):
    """The request took longer than the client's timeout."""


@dataclass
class LLMClient:
    """Chat completions over HTTP, with retries, a time limit per request and an on-disk answer cache.

    Args:
        timeout: seconds one request may take in all (connecting, the model thinking, reading the
            answer); a request that runs over is tried once more, then the run stops.
        retries: further tries after a connection failure or a 408/409/425/429/5xx answer.
        backoff: seconds before the first retry, doubled each time (with jitter), unless the server
            says how long with Retry-After.
        bad_answer_retries: further tries after a 200 answer that is not a chat completion.
        max_wait: the longest Retry-After honoured; a server asking for more is an error at once.
    """

    model: str = setting(flag="--llm-model")
    base_url: str = setting("https://api.openai.com/v1", flag="--llm-base-url")
    api_key_env: str = setting("OPENAI_API_KEY", flag="--llm-key-env")
    cache_dir: Path | None = None
    retries: int = setting(4, at_least=0)
    timeout: float = setting(60.0, above=0, flag="--llm-timeout")
    backoff: float = setting(1.0, at_least=0)
    bad_answer_retries: int = setting(2, at_least=0)
    max_wait: float = setting(120.0, at_least=0)
    stopped: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    """Set to end every wait to retry at once (Ctrl-C, or another request failing for good)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.timeout == math.inf:
            refuse(self, "timeout", "give the seconds a request may take, a number > 0 (e.g. 60)")

    def complete(self, prompt: str, max_tokens: int = 40, *, what: str = "", on_wait: Waiting | None = None) -> str:
        """The model's answer to `prompt` (from the cache when asked before). `what` names the request
        in messages (e.g. "latent 12"); `on_wait` is told when it waits to retry."""
        body = {"model": self.model, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt}]}
        key = text_key(self.base_url, json.dumps(body, sort_keys=True))
        cached = self.cache_dir / f"{key}.json" if self.cache_dir else None
        if cached and cached.exists():
            try:
                answer = json.loads(cached.read_text(encoding="utf-8"))["answer"]
                if isinstance(answer, str):
                    return answer
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged cache entry: ask again, and overwrite it
        answer = self._post(body, what, on_wait)
        if cached:
            write_text(cached, json.dumps({"answer": answer}))
        return answer

    def _post(self, body: dict, what: str = "", on_wait: Waiting | None = None) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        api_key = os.environ.get(self.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        data = json.dumps(body).encode()
        who = f"{what}: " if what else ""
        failed = bad = timed_out = 0
        while True:
            try:
                status, answer_headers, raw = self._request(url, data, headers)
            except _Timeout:
                timed_out += 1
                if timed_out > 1:
                    raise LLMError(f"{who}{url} did not answer within {self.timeout:g} s, twice; give a slow model "
                                   f"more time with --llm-timeout, or check the server") from None
                self._tell(on_wait, f"{who}no answer within {self.timeout:g} s; asking again")
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                failed += 1
                reason = _describe_failure(exc)
                if failed > self.retries:
                    raise LLMError(f"{who}{url} failed {failed} times (last: {reason}); is the server up, and "
                                   f"is --llm-base-url right?") from None
                pause = self._backoff(failed)
                self._tell(on_wait, f"{who}{reason}; retry {failed} of {self.retries} in {pause:.0f} s")
                self._pause(pause)
                continue
            if 200 <= status < 300:
                answer, problem = _read_answer(raw, answer_headers)
                if problem is None:
                    return answer
                bad += 1
                if bad > self.bad_answer_retries:
                    advice = ("the model gave no text: check --llm-model (a content filter, or a reasoning model "
                              "that spends its tokens thinking)" if "no text" in problem or "empty answer" in problem
                              else "that is not an OpenAI chat completion: check --llm-base-url (the API root, "
                                   "e.g. .../v1) and --llm-model")
                    raise LLMError(f"{who}{url} answered {problem}, {bad} times; {advice}")
                pause = self._backoff(bad)
                self._tell(on_wait, f"{who}the server answered {problem}; asking again in {pause:.0f} s")
                self._pause(pause)
                continue
            said = _server_message(raw)
            if 300 <= status < 400:  # never followed: the key would go along to wherever it points
                where = " ".join((answer_headers.get("Location") or "").split())[:200]
                raise LLMError(f"{who}{url} redirects (HTTP {status}) to {where or 'nowhere it says'}; give the "
                               f"address the API really is at as --llm-base-url")
            if status not in RETRY_STATUS and status < 500:
                raise LLMError(f"{who}{url} refused the request (HTTP {status}{': ' + said if said else ''}); "
                               f"check --llm-model and the key in ${self.api_key_env}")
            failed += 1
            last = f"HTTP {status}{': ' + said if said else ''}"
            if failed > self.retries:
                raise LLMError(f"{who}{url} failed {failed} times (last: {last}); try again later")
            asked = _retry_after(answer_headers.get("Retry-After")) if status in (429, 503) else None
            if asked is not None and asked > self.max_wait:
                raise LLMError(f"{who}{url} asks to wait {asked:.0f} s before the next request ({last}); more than "
                               f"{self.max_wait:g} s: try again later")
            pause = asked if asked is not None else self._backoff(failed)
            self._tell(on_wait, f"{who}{last}; retry {failed} of {self.retries} in {pause:.0f} s"
                                + (" (as the server asks)" if asked is not None else ""))
            self._pause(pause)

    def _request(self, url: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one POST, within `timeout` seconds in all; HTTP errors are answers.

        A watchdog shuts the connection at the deadline whatever it waits for (the server thinking,
        headers or a body sent a byte at a time), so no server can hold a request longer."""
        deadline = time.monotonic() + self.timeout
        request = urllib.request.Request(url, data, headers, method="POST")
        watchdog = _Watchdog(self.timeout)
        try:
            try:
                response = _opener(watchdog).open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:  # a status >= 400, or a redirect (not followed)
                response = exc
            with response:
                status = response.status if response.status is not None else response.code
                answer = int(status), response.headers, _read_body(response, deadline)
        except (socket.timeout, TimeoutError):
            raise _Timeout() from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            if watchdog.fired or isinstance(getattr(exc, "reason", None), (socket.timeout, TimeoutError)):
                raise _Timeout() from None
            raise
        finally:
            watchdog.cancel()
        if watchdog.fired:  # the body may have been cut short at the deadline
            raise _Timeout()
        return answer

    def _pause(self, seconds: float) -> None:
        """Wait before a retry, ending at once when the client is stopped (a sleep held Ctrl-C for up to
        max_wait seconds: the label run waits for its workers)."""
        if _wait_or_stop(self.stopped, seconds):
            raise _Stopped()

    def _backoff(self, attempt: int) -> float:
        return self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())

    @staticmethod
    def _tell(on_wait: Waiting | None, message: str) -> None:
        log.info("%s", message)
        if on_wait is not None:
            on_wait(message)


class _Watchdog:
    """Shuts a request's socket once its time is up, whatever the request is waiting for."""

    def __init__(self, seconds: float):
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shut()

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment included) whose connections the watchdog watches
    and which follows no redirect."""

    class HTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    class HTTPS(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(HTTP, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        _context: ssl.SSLContext | None  # set by urllib's __init__; typeshed omits this private attribute

        def https_open(self, req: Any) -> Any:
            extra = {"check_hostname": self._check_hostname} if hasattr(self, "_check_hostname") else {}
            return self.do_open(HTTPS, req, context=self._context, **extra)

    return urllib.request.build_opener(_NoRedirect, HTTPHandler, HTTPSHandler)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers (urllib would resend the request, API key included, elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _read_body(response: Any, deadline: float) -> bytes:
    """The whole body, read in pieces so a server that trickles it cannot outlast the deadline."""
    parts: list[bytes] = []
    size = 0
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout()
        if sock is not None:
            try:
                sock.settimeout(left)
            except OSError:
                pass
        try:
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
        except (socket.timeout, TimeoutError):
            raise _Timeout() from None
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ValueError(f"an answer larger than {MAX_ANSWER_BYTES >> 20} MB")


def _describe_failure(exc: BaseException) -> str:
    """A connection failure as a few words: `ConnectionRefusedError: [Errno 111] Connection refused`."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    text = " ".join(str(reason).split())
    name = type(reason).__name__ if isinstance(reason, BaseException) else "error"
    return f"{name}: {text[:120]}" if text else name


def _snippet(text: str, n: int = 60) -> str:
    """The start of a body, on one line, quoted."""
    return json.dumps(" ".join(text.split())[:n])


def _read_answer(raw: bytes, headers: Any) -> tuple[str, str | None]:
    """(the answer's text, None) from a chat completion, or ("", what the body was instead)."""
    if not raw.strip():
        return "", "an empty body"
    text = raw.decode("utf-8", errors="replace")
    kind = (headers.get("Content-Type") or "").lower() if headers is not None else ""
    if "html" in kind or text.lstrip()[:1] == "<":
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        return "", "an HTML page" + (f" ({_snippet(title.group(1))})" if title else "")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return "", f"a body that is not JSON ({_snippet(text)})"
    if not isinstance(data, dict):
        return "", f"a JSON {_json_kind(data)} instead of an object"
    if "error" in data and "choices" not in data:
        return "", f"an error ({_server_message(raw) or _snippet(json.dumps(data['error']))})"
    choices = data.get("choices")
    if not isinstance(choices, list):
        return "", "an object without choices" if choices is None else f"choices that are a JSON {_json_kind(choices)}"
    if not choices:
        return "", "no answer (choices: [])"
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        return "", "a choice without a message"
    content = message.get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        content = "".join(t for t in texts if isinstance(t, str)) if texts else None
    finish = first.get("finish_reason")
    why = f", finish_reason {_snippet(str(finish), 30)}" if finish not in (None, "stop") else ""
    if content is None:
        refusal = message.get("refusal")
        return "", "no text (content: null" + why + (f", refusal {_snippet(str(refusal))}" if refusal else "") + ")"
    if not isinstance(content, str):
        return "", f"content that is a JSON {_json_kind(content)}, not text"
    if not content.strip():
        return "", f"an empty answer (content: \"\"{why})"
    return content.strip(), None


def _server_message(raw: bytes) -> str:
    """The message an error body carries (OpenAI's {"error": {"message": ...}}, or its first words)."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message.strip():
            return " ".join(message.split())[:160]
    if text[:1] == "<":
        return ""  # an HTML error page says no more than its status
    return " ".join(text.split())[:160]


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,6})?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _json_kind(value: Any) -> str:
    return {list: "list", dict: "object", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), "null" if value is None else type(value).__name__)


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


@dataclass
class LLMProgress:
    """Where an LLM labelling run is: latents finished of all, and what it is waiting on now."""

    done: int
    total: int
    note: str
    """e.g. `asking about latents 3, 8` or `latent 8: HTTP 429; retry 1 of 4 in 30 s (as the server asks)`."""


def llm_labels(store: Store, client: LLMClient, latents: list[int], *, n_examples: int = 10,
               concurrency: int = 8, seed: int = 0,
               on_progress: Callable[[LLMProgress], None] | None = None) -> Labels:
    """Label `latents` with the LLM; keep the labels whose balanced held-out detection accuracy is >= 0.75.

    `on_progress` hears when a latent starts or ends and why a request waits. The first LLMError
    stops the run: the requests not yet sent are cancelled and the error is raised."""
    at_least("llm_labels", "concurrency", concurrency, 1)
    at_least("llm_labels", "n_examples", n_examples, 1)
    for latent in latents:
        if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)) or not 0 <= latent < store.d_sae:
            raise LabelError(f"latent {latent!r} does not exist; this SAE has 0..{store.d_sae - 1}")
    texts = store.frame["text"].to_list()
    stop = client.stopped  # set on the first error or Ctrl-C: ends the other workers' waits at once
    stop.clear()
    lock = threading.Lock()
    asking: dict[int, str] = {}  # latent -> why its request waits ("" while it is simply being answered)
    done = [0]

    def report() -> None:
        if on_progress is None:
            return
        with lock:
            waits = [why for why in asking.values() if why]
            names = ", ".join(str(i) for i in sorted(asking)[:6]) + (", …" if len(asking) > 6 else "")
            state = LLMProgress(done[0], len(latents), waits[-1] if waits else
                                f"asking about latent{'s' if len(asking) > 1 else ''} {names}" if asking else "")
        on_progress(state)

    def one(latent: int) -> tuple[int, str, float] | None:
        if stop.is_set():
            return None
        rng = np.random.default_rng(seed + latent)
        shown, held_pos, negatives = _examples(store, latent, n_examples, rng)
        held_neg = negatives[n_examples:]  # never the ones shown in the prompt
        if not held_pos or not negatives[:n_examples] or not held_neg:
            with lock:
                done[0] += 1  # too rare to label and test: counted, so the progress reaches its total
            report()
            return None
        with lock:
            asking[latent] = ""
        report()

        def waiting(why: str) -> None:
            with lock:
                asking[latent] = why
            report()

        def ask(prompt: str, max_tokens: int) -> str:
            if stop.is_set():
                raise _Stopped()
            answer = client.complete(prompt, max_tokens, what=f"latent {latent}", on_wait=waiting)
            with lock:
                asking[latent] = ""
            return answer

        try:
            label = _label_of(ask(describe_prompt(shown, [texts[r] for r in negatives[:n_examples]]), 40))
            if not label:
                log.info("latent %d: the LLM gave no label", latent)
                return None
            judged = [(_says_yes(ask(detect_prompt(label, texts[r]), 3)), truth)
                      for rows, truth in ((held_pos, True), (held_neg, False)) for r in rows]
        except _Stopped:
            return None
        except BaseException:
            stop.set()  # at once, before a free worker starts the next latent
            raise
        finally:
            with lock:
                asking.pop(latent, None)
                done[0] += 1
            report()
        # balanced: the mean of the hit rate on held-out positives and on held-out negatives, so an LLM
        # that always answers "no" scores 0.5 however few positives a rare latent has
        hits = [np.mean([said == truth for said, truth in judged if truth is side]) for side in (True, False)]
        return latent, label, float(np.mean(hits))

    found: dict[int, tuple[int, str, float]] = {}
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = [pool.submit(one, latent) for latent in latents]
        for future in as_completed(futures):
            result = future.result()  # the first error stops the run
            if result is not None:
                found[result[0]] = result
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    results = [found[latent] for latent in latents if latent in found]
    kept = [(latent, label, acc) for latent, label, acc in results if acc >= KEEP_ACCURACY]
    log.info("LLM labels: %d of %d kept (detection accuracy >= %.2f)", len(kept), len(results), KEEP_ACCURACY)
    return Labels(store.d_sae, {latent: label for latent, label, _ in kept},
                  {latent: f"llm:{client.model}" for latent, _, _ in kept}, {latent: acc for latent, _, acc in kept})


def _wait_or_stop(stopped: threading.Event, seconds: float) -> bool:
    """Wait `seconds`, or less when `stopped` is set; True when it was."""
    return stopped.wait(seconds)


class _Stopped(Exception):
    """Another latent's request failed: this one is not sent."""


def _label_of(answer: str) -> str:
    """A label from the model's answer: its first non-empty line, without quotes, markdown or a full stop."""
    line = next((line for line in answer.splitlines() if line.strip(" .\"'*`#")), "")
    return line.strip(" .\"'*`#").removeprefix("Label:").removeprefix("label:").strip(" .\"'*`")


def _says_yes(answer: str) -> bool:
    return answer.strip(" .\"'*`\n").lower().startswith("yes")
