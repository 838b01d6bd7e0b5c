"""The LLM labeler over real HTTP against a local server that speaks chat completions."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from saeembed.llm_labels import LLMClient, LLMError, llm_labels
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
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
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
