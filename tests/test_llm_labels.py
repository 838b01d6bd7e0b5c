"""The LLM labeler over real HTTP against a local server that speaks chat completions."""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saeembed.errors import ConfigError, SaeEmbedError
from saeembed.labels.llm import LLMClient, LLMError, llm_labels
from tests.test_fuzz_labels import json_values
from tests.test_labels import synthetic_store


class FakeLLM(BaseHTTPRequestHandler):
    """Labels a feature by the word most often marked << >>; judges 'yes' when that word is in the text."""

    calls: Counter = Counter()
    fail_first: list = []
    auth: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeLLM.auth.append(self.headers.get("Authorization"))
        if FakeLLM.fail_first:
            status = FakeLLM.fail_first.pop(0)
            self.send_response(status)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        if prompt.startswith("Feature description:"):
            FakeLLM.calls["detect"] += 1
            label = prompt.split("\n")[0].removeprefix("Feature description: the word ")
            text = prompt.split("\nText: ")[1]
            answer = "yes" if label in text else "no"
        else:
            FakeLLM.calls["describe"] += 1
            marked = Counter(re.findall(r"<<(.+?)>>", prompt.split("NOT ACTIVE:")[0]))
            answer = f"the word {marked.most_common(1)[0][0]}" if marked else "nothing"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeLLM.calls.clear()
    FakeLLM.fail_first.clear()
    FakeLLM.auth.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_labels_are_generated_scored_and_cached(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret-123")
    client = LLMClient("fake", server, "TEST_LLM_KEY", cache_dir=tmp_path / "llm", backoff=0.01)
    store = synthetic_store()
    labels = llm_labels(store, client, [0, 1, 2], n_examples=5, concurrency=4)
    assert labels.label[0] == "the word def" and labels.label[1] == "the word football"
    assert labels.score[0] >= 0.75 and labels.source[0] == "llm:fake"
    assert 2 not in labels.label, "a latent on every document has no negatives to be tested against"
    assert FakeLLM.calls["describe"] == 2 and FakeLLM.calls["detect"] > 0
    assert set(FakeLLM.auth) == {"Bearer sk-secret-123"}
    assert not any("sk-secret" in p.read_text() for p in (tmp_path / "llm").iterdir()), "the key is never stored"
    before = sum(FakeLLM.calls.values())
    again = llm_labels(store, client, [0, 1], n_examples=5)
    assert again.label == {0: "the word def", 1: "the word football"}
    assert sum(FakeLLM.calls.values()) == before, "a rerun is answered from the cache"


def test_labels_that_fail_detection_are_dropped(server, tmp_path):
    client = LLMClient("fake", server, cache_dir=tmp_path / "llm")
    store = synthetic_store()
    store.peak_start[:] = 0  # every peak now marks "def"/"the": labels that describe nothing specific
    store.peak_end[:] = 3
    labels = llm_labels(store, client, [1], n_examples=5)
    assert labels.label == {}


def test_retries_with_backoff_then_clear_errors(server, tmp_path):
    client = LLMClient("fake", server, backoff=0.01)
    FakeLLM.fail_first.extend([503, 429])
    assert client.complete("Feature description: the word x\nText: x marks") == "yes"
    FakeLLM.fail_first.append(401)
    with pytest.raises(LLMError, match="refused the request \\(HTTP 401\\)"):
        client.complete("anything new")
    dead = LLMClient("fake", "http://127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(LLMError, match="failed 2 times"):
        dead.complete("hello")


# -- a scripted endpoint: what it answers, how slowly, and what the client makes of it ----------------

class Scripted(BaseHTTPRequestHandler):
    """Answers the n-th request with script[n] (the last one again once the script runs out): a dict of
    status, headers (list of pairs), body (bytes), delay (seconds before answering) and trickle
    (seconds between the bytes of the body)."""

    script: list = []
    calls: list = []
    release = threading.Event()  # set at teardown: a handler still delaying gives up

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        n = len(Scripted.calls)
        Scripted.calls.append(self.path)
        step = Scripted.script[min(n, len(Scripted.script) - 1)]
        if Scripted.release.wait(step.get("delay", 0)):
            return
        try:
            if step.get("slow_headers"):  # headers a byte at a time, without end
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                for i in range(10_000):
                    self.wfile.write(b"X-Slow-%d: x\r\n" % i)
                    self.wfile.flush()
                    if Scripted.release.wait(step["slow_headers"]):
                        return
            self.send_response(step.get("status", 200))
            for name, value in step.get("headers", []):
                self.send_header(name, value)
            self.end_headers()
            body = step.get("body", b"")
            if step.get("trickle"):
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    if Scripted.release.wait(step["trickle"]):
                        return
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first
            pass

    def log_message(self, *args):
        pass


def completion(content, **choice) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}, **choice}]}).encode()


OK = {"status": 200, "headers": [("Content-Type", "application/json")], "body": completion("yes")}


@pytest.fixture
def scripted():
    """(base URL, set the script); the server runs in a thread on a free local port."""
    Scripted.script, Scripted.calls = [OK], []
    Scripted.release.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def play(*steps):
        Scripted.script, Scripted.calls = list(steps), []

    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", play
    Scripted.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def pauses(monkeypatch):
    """The client's waits to retry, recorded instead of waited (the server still answers over real HTTP)."""
    from saeembed.labels import llm as module

    slept = []
    monkeypatch.setattr(module, "_wait_or_stop", lambda stopped, seconds: slept.append(seconds) or stopped.is_set())
    return slept


def one_line(exc) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_retry_after_in_seconds_or_as_a_date_is_honoured(scripted, pauses):
    url, play = scripted
    client = LLMClient("fake", url, backoff=0.01)
    play({"status": 429, "headers": [("Retry-After", "7")]}, {"status": 503, "headers": [("Retry-After", "2")]}, OK)
    assert client.complete("a") == "yes" and pauses == [7.0, 2.0] and len(Scripted.calls) == 3
    pauses.clear()
    later = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30),
                                        usegmt=True)
    play({"status": 429, "headers": [("Retry-After", later)]}, OK)
    assert client.complete("b") == "yes" and 25 < pauses[0] <= 30
    pauses.clear()
    play({"status": 429, "headers": [("Retry-After", "soon")]}, {"status": 500}, OK)  # unreadable: own backoff
    assert client.complete("c") == "yes" and len(pauses) == 2 and all(p < 0.1 for p in pauses)
    play({"status": 429, "headers": [("Retry-After", "3600")], "body": b'{"error": {"message": "slow down"}}'})
    with pytest.raises(LLMError) as caught:
        client.complete("d")
    assert "asks to wait 3600 s before the next request (HTTP 429: slow down); more than 120 s: try again later" \
        in one_line(caught) and len(Scripted.calls) == 1
    play({"status": 503})
    with pytest.raises(LLMError, match=r"failed 5 times \(last: HTTP 503\); try again later"):
        client.complete("e")


def test_a_hanging_endpoint_costs_two_timeouts_not_five_minutes(scripted):
    url, play = scripted
    client = LLMClient("fake", url, timeout=0.3, backoff=0.01)
    # no answer; an answer a byte at a time; headers without end
    for hang in ({**OK, "delay": 30}, {**OK, "trickle": 0.2}, {**OK, "slow_headers": 0.05}):
        play(hang)
        started = time.monotonic()
        with pytest.raises(LLMError) as caught:
            client.complete("hello", what="latent 7")
        assert time.monotonic() - started < 10, "cut at the deadline, not after the server's 30 s"  # loose: a busy CI
        assert "latent 7: " in one_line(caught) and "did not answer within 0.3 s, twice" in str(caught.value)
        assert "--llm-timeout" in str(caught.value) and len(Scripted.calls) == 2
    play({**OK, "delay": 0.5}, OK)  # slow once: the second try answers
    assert client.complete("again") == "yes"
    with pytest.raises(ConfigError, match="LLMClient.timeout \\(--llm-timeout\\) = 0 is not allowed"):
        LLMClient("fake", url, timeout=0)


@pytest.mark.parametrize("body, headers, said", [
    (completion(None), [], "no text (content: null)"),
    (completion(None, finish_reason="content_filter"), [], 'content: null, finish_reason "content_filter"'),
    (completion("  ", finish_reason="length"), [], 'an empty answer (content: "", finish_reason "length")'),
    (json.dumps({"choices": []}).encode(), [], "no answer (choices: [])"),
    (json.dumps([{"choices": []}]).encode(), [], "a JSON list instead of an object"),
    (b'{"object": "list", "data": []}', [], "an object without choices"),
    (json.dumps({"choices": [{"text": "yes"}]}).encode(), [], "a choice without a message"),
    (completion(7), [], "content that is a JSON number, not text"),
    (b"yes", [("Content-Type", "text/plain")], 'a body that is not JSON ("yes")'),
    (b"", [], "an empty body"),
    (b"<!doctype html><html><head><title>Welcome to nginx!</title></head></html>", [("Content-Type", "text/html")],
     'an HTML page ("Welcome to nginx!")'),
    (b'{"error": {"message": "model overloaded"}}', [], "an error (model overloaded)"),
])
def test_answers_that_are_not_chat_completions_say_what_they_were(scripted, pauses, body, headers, said):
    url, play = scripted
    play({"status": 200, "headers": headers, "body": body})
    with pytest.raises(LLMError) as caught:
        LLMClient("fake", url, backoff=0.01).complete("hello", what="latent 3")
    message = one_line(caught)
    assert message.startswith(f"latent 3: {url}/chat/completions answered ") and f"{said}" in message, message
    assert message.count(", 3 times; ") == 1 and "is the server up" not in message and "check --llm-" in message
    assert len(Scripted.calls) == 3, "tried 1 + bad_answer_retries times"
    play({"status": 200, "body": body}, OK)
    assert LLMClient("fake", url, backoff=0.01).complete("hello") == "yes", "a bad answer once is retried"


def test_refusals_and_redirects_are_not_retried(scripted):
    url, play = scripted
    client = LLMClient("fake", url, backoff=0.01, api_key_env="TEST_LLM_KEY")
    play({"status": 404, "body": b'{"error": {"message": "The model `fake` does not exist", "code": 404}}'})
    with pytest.raises(LLMError) as caught:
        client.complete("a")
    assert "refused the request (HTTP 404: The model `fake` does not exist); check --llm-model and the key in " \
           "$TEST_LLM_KEY" in one_line(caught) and len(Scripted.calls) == 1
    play({"status": 301, "headers": [("Location", "http://127.0.0.1:9/elsewhere")]})
    with pytest.raises(LLMError) as caught:
        client.complete("b")
    assert "redirects (HTTP 301) to http://127.0.0.1:9/elsewhere; give the address" in one_line(caught)
    assert len(Scripted.calls) == 1


def test_a_wait_to_retry_ends_at_once_when_the_client_is_stopped(scripted):
    """Ctrl-C during a label run stops the client: a worker waiting to retry (up to max_wait seconds) stops
    waiting at once instead of holding the run."""
    from saeembed.labels import llm as module

    url, play = scripted
    play((503, {"Retry-After": "30"}, b"busy"))
    client = LLMClient(model="m", base_url=url, retries=3, max_wait=60)
    threading.Timer(0.2, client.stopped.set).start()
    started = time.monotonic()
    with pytest.raises(module._Stopped):
        client.complete("hello")
    assert time.monotonic() - started < 10, "the 30 s wait ended when the client was stopped"


def test_a_damaged_cache_entry_is_asked_again(scripted, tmp_path):
    url, play = scripted
    client = LLMClient("fake", url, cache_dir=tmp_path / "llm")
    assert client.complete("q") == "yes"
    (entry,) = (tmp_path / "llm").iterdir()
    entry.write_text('{"answ')
    assert client.complete("q") == "yes" and len(Scripted.calls) == 2
    assert client.complete("q") == "yes" and len(Scripted.calls) == 2


def test_the_first_failure_stops_the_run_and_progress_names_the_latent(scripted, pauses):
    url, play = scripted
    store = synthetic_store()
    play({"status": 401})
    with pytest.raises(LLMError, match="latent 0: .*refused the request \\(HTTP 401\\)"):
        llm_labels(store, LLMClient("fake", url), [0, 1], n_examples=5, concurrency=1)
    assert len(Scripted.calls) == 1, "latent 1 is never asked once latent 0 failed"
    seen = []
    play({"status": 429, "headers": [("Retry-After", "1")]}, OK)
    labels = llm_labels(store, LLMClient("fake", url), [0, 1], n_examples=5, concurrency=1, on_progress=seen.append)
    notes = [p.note for p in seen]
    assert "asking about latent 0" in notes and "asking about latent 1" in notes
    assert "latent 0: HTTP 429; retry 1 of 4 in 1 s (as the server asks)" in notes
    assert seen[-1].done == seen[-1].total == 2 and labels.d_sae == 4
    with pytest.raises(SaeEmbedError, match="latent 9 does not exist; this SAE has 0..3"):
        llm_labels(store, LLMClient("fake", url), [9])


def test_cli_llm_timeout(scripted, tmp_path, monkeypatch):
    import numpy as np
    from typer.testing import CliRunner

    from commands.app import app
    from saeembed.store import DocVectors
    from saeembed.synthetic import write_store

    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    url, play = scripted
    store = synthetic_store()
    m = store.matrix
    path = write_store(tmp_path / "s.parquet", DocVectors(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data,
                                                          store.peak_start.astype(np.int32),
                                                          store.peak_end.astype(np.int32), np.full(24, 9, np.int32)),
                       {"text": store.frame["text"].to_list()}, d_sae=4)
    play({**OK, "delay": 30})
    started = time.monotonic()
    result = CliRunner().invoke(app, ["labels", "generate", str(path), "--method", "llm", "--llm-model", "fake",
                                      "--llm-base-url", url, "--llm-timeout", "0.3", "--min-docs", "1"])
    assert result.exit_code == 1 and time.monotonic() - started < 5
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "did not answer within 0.3 s, twice" in result.stderr and "--llm-timeout" in result.stderr
    result = CliRunner().invoke(app, ["labels", "generate", str(path), "--method", "llm", "--llm-model", "fake",
                                      "--llm-base-url", url, "--llm-timeout", "0"])
    assert result.exit_code == 1 and "LLMClient.timeout (--llm-timeout) = 0.0 is not allowed" in result.stderr


# -- fuzzing: any status, headers and body ---------------------------------------------------------

statuses = st.one_of(st.just(200), st.just(200), st.sampled_from([429, 503]),
                     st.sampled_from([201, 204, 301, 302, 304, 307, 400, 401, 404, 408, 409, 418, 425, 500, 502, 504]),
                     st.integers(100, 599))
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
headers = st.lists(st.one_of(
    st.tuples(st.just("Retry-After"), st.sampled_from(["0", "0.01", "1", "3600", "-1", "", "1e3",
                                                       "Wed, 21 Oct 2015 07:28:00 GMT"]) | header_values),
    st.tuples(st.just("Content-Type"), st.sampled_from(["application/json", "text/html", "text/plain"])),
    st.tuples(st.just("Content-Length"), st.sampled_from(["0", "3", "100000", "abc", "-5"])),
    st.tuples(st.just("Transfer-Encoding"), st.just("chunked")),
    st.tuples(st.just("Location"), st.sampled_from(["http://127.0.0.1:9/x", "https://example.invalid/", "/v2"])),
    st.tuples(st.sampled_from(["X-Anything", "Server"]), header_values)), max_size=3)
@st.composite
def broken_completions(draw) -> bytes:
    """A good chat completion with one part (the whole, choices, the first choice, its message, the
    content, finish_reason) replaced by any JSON value or removed."""
    good = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"},
                                    "finish_reason": "stop"}]}
    path = draw(st.sampled_from([(), ("choices",), ("choices", 0), ("choices", 0, "message"),
                                 ("choices", 0, "message", "content"), ("choices", 0, "finish_reason")]))
    if not path:
        return json.dumps(draw(json_values)).encode()
    parent = good
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.integers(0, 3)) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return json.dumps(good).encode()


bodies = st.one_of(broken_completions(), broken_completions(), st.binary(max_size=80),
                   json_values.map(lambda v: json.dumps(v).encode()),
                   st.lists(json_values, max_size=2).map(lambda v: json.dumps(v).encode()),
                   st.dictionaries(st.sampled_from(["choices", "error", "object"]), json_values, max_size=2).map(
                       lambda v: json.dumps(v).encode()),
                   st.lists(st.dictionaries(st.sampled_from(["message", "finish_reason", "text"]),
                                            json_values | st.fixed_dictionaries({"content": json_values}), max_size=2),
                            max_size=2).map(lambda v: json.dumps({"choices": v}).encode()),
                   st.builds(completion, json_values), st.just(completion("yes")),
                   st.just(b"<html><title>502 Bad Gateway</title></html>"))
steps = st.fixed_dictionaries({"status": statuses, "headers": headers, "body": bodies})


@settings(max_examples=int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(steps, min_size=1, max_size=3))
def test_fuzz_any_answer_is_an_answer_or_one_line(scripted, script):
    url, play = scripted
    play(*script)
    client = LLMClient("fake", url, retries=1, bad_answer_retries=1, backoff=0, timeout=0.5, max_wait=0.05)
    started = time.monotonic()
    try:
        answer = client.complete("hello", what="latent 1")
    except LLMError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("latent 1: "), str(exc)
    else:
        assert isinstance(answer, str) and answer.strip() == answer and answer
    assert len(Scripted.calls) <= 4, "1 + retries + bad_answer_retries at most"
    assert time.monotonic() - started < 4 * 0.5 + 8  # bounded by the timeouts (loose: a busy CI machine)


@settings(max_examples=int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "100")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=broken_completions(), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_fuzz_any_shape_of_a_200_answer(scripted, body, content_type):
    url, play = scripted
    play({"status": 200, "headers": [("Content-Type", content_type)] if content_type else [], "body": body})
    try:
        answer = LLMClient("fake", url, bad_answer_retries=0, timeout=0.5).complete("hello")
    except LLMError as exc:
        assert "\n" not in str(exc) and " answered " in str(exc), str(exc)
        assert len(Scripted.calls) == 1
    else:
        content = json.loads(body)["choices"][0]["message"]["content"]
        assert answer == (content if isinstance(content, str) else
                          "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
                          ).strip() and answer
