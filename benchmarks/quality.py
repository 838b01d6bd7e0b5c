"""Retrieval and clustering quality on the labelled corpora of ../shared/data; prints JSON.

    python benchmarks/quality.py                  # both; ~10 min on a laptop CPU the first time (cached after)
    python benchmarks/quality.py --only retrieval

Retrieval: 18 property queries over labelled corpora, each with its relevant documents given by the
labels; MAP and P@10 for SAE search (the paper's scoring), dense search (all-MiniLM-L6-v2 sentences)
and hybrid (reciprocal-rank fusion), all in one run on the same stores.
Clustering: sib200, the same 1,004 sentences in 8 languages with 7 topics: clustering along topic
concepts should follow topics, along language concepts languages (ARI against both label sets), with
every latent and with k-means on dense embeddings for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saeembed.analysis.cluster import cluster  # noqa: E402
from saeembed.analysis.concepts import select_concepts  # noqa: E402
from saeembed.analysis.config import ClusterConfig  # noqa: E402
from saeembed.analysis.search import concept_scores, dense_scores, reciprocal_rank_fusion  # noqa: E402
from saeembed.embedding.open_store import open_store  # noqa: E402

DATA = ROOT.parent / "shared" / "data"

# corpus name -> (files, documents kept per file)
CORPORA = {
    "tweets_sarcasm": (["isarcasmeval/en.jsonl"], None),
    "tweets_stance": (["tweeteval/stance.jsonl"], None),
    "tweets_offensive": (["tweeteval/offensive.jsonl"], 2000),
    "news": (["agnews/test.jsonl"], 2000),
    "gpt4_answers": (["gpteacher/codegen.jsonl", "gpteacher/roleplay.jsonl", "gpteacher/toolformer.jsonl"], 700),
    "persona": (["persona/statements.jsonl"], 3000),
    "qa_answers": (["halueval/qa.jsonl"], None),
}

Relevant = Callable[[dict], bool]
QUERIES: list[tuple[str, str, Relevant]] = [
    ("tweets_sarcasm", "sarcasm, irony, mocking", lambda r: r["sarcastic"] is True),
    ("tweets_stance", "climate change, global warming", lambda r: r["topic"] == "climate"),
    ("tweets_stance", "feminism, women's rights", lambda r: r["topic"] == "feminist"),
    ("tweets_stance", "abortion, pro-life", lambda r: r["topic"] == "abortion"),
    ("tweets_stance", "atheism, religion, god", lambda r: r["topic"] == "atheism"),
    ("tweets_stance", "hillary clinton, election", lambda r: r["topic"] == "hillary"),
    ("tweets_offensive", "offensive insults, swearing", lambda r: r["label"] == "offensive"),
    ("news", "sports", lambda r: r["topic"] == "Sports"),
    ("news", "business, economy, stocks", lambda r: r["topic"] == "Business"),
    ("news", "science, technology, computers", lambda r: r["topic"] == "Sci/Tech"),
    ("news", "war, world politics, government", lambda r: r["topic"] == "World"),
    ("gpt4_answers", "programming code", lambda r: r["source"] == "codegen"),
    ("gpt4_answers", "role-play, playing a character", lambda r: r["source"] == "roleplay"),
    ("gpt4_answers", "using tools, API calls", lambda r: r["source"] == "toolformer"),
    ("persona", "religion, faith", lambda r: r["trait"].startswith("subscribes-to-") and r["matches_trait"]),
    ("persona", "power, control, influence", lambda r: "power" in r["trait"] and r["matches_trait"]),
    ("persona", "interest in art and literature", lambda r: r["trait"] in ("interest-in-art", "interest-in-literature")
     and r["matches_trait"]),
    ("qa_answers", "wrong, made-up answer", lambda r: r["hallucinated"] is True),
]


# Queries written after the search settings were tuned on QUERIES (issue 21), and never tuned on: the
# figures the harness reports as held out. Same corpora, other words and other properties.
TEST_QUERIES: list[tuple[str, str, Relevant]] = [
    ("tweets_sarcasm", "joking, not meant seriously", lambda r: r["sarcastic"] is True),
    ("tweets_stance", "environment, pollution, carbon emissions", lambda r: r["topic"] == "climate"),
    ("tweets_stance", "women, gender equality, sexism", lambda r: r["topic"] == "feminist"),
    ("tweets_stance", "unborn babies, planned parenthood", lambda r: r["topic"] == "abortion"),
    ("tweets_stance", "church, jesus, prayer", lambda r: r["topic"] == "atheism"),
    ("tweets_stance", "democrats, presidential campaign", lambda r: r["topic"] == "hillary"),
    ("tweets_offensive", "hate, abuse, vulgar language", lambda r: r["label"] == "offensive"),
    ("news", "football, basketball, tennis", lambda r: r["topic"] == "Sports"),
    ("news", "markets, oil prices, companies", lambda r: r["topic"] == "Business"),
    ("news", "internet, software, space research", lambda r: r["topic"] == "Sci/Tech"),
    ("news", "elections, conflict, diplomacy", lambda r: r["topic"] == "World"),
    ("gpt4_answers", "writing a python function", lambda r: r["source"] == "codegen"),
    ("gpt4_answers", "pretending to be someone in a story", lambda r: r["source"] == "roleplay"),
    ("gpt4_answers", "web search, calculator", lambda r: r["source"] == "toolformer"),
    ("persona", "making money, getting rich",
     lambda r: r["trait"] == "desire-for-acquiring-wealth" and r["matches_trait"]),
    ("persona", "guns, second amendment", lambda r: r["trait"] == "believes-in-gun-rights" and r["matches_trait"]),
    ("qa_answers", "false, invented facts", lambda r: r["hallucinated"] is True),
]


def sae_search_scores(store, query: str) -> np.ndarray:
    """Every document's score as `saeembed search` ranks it (0 for all when the query selects nothing, as
    search then returns nothing)."""
    from saeembed.analysis.concepts import ConceptError

    try:
        try:
            concepts = select_concepts(query, store, weak=False)
        except TypeError:  # a library from before `weak` (the harness's before/after runs)
            concepts = select_concepts(query, store)
        return concept_scores(store, concepts).scores
    except ConceptError:
        return np.zeros(store.n_docs)


def build_corpus(name: str, tmp: Path) -> Path:
    files, per_file = CORPORA[name]
    rng = random.Random(0)
    lines = []
    for file in files:
        rows = [json.loads(line) for line in open(DATA / file, encoding="utf-8")]
        rows = [r for r in rows if r.get("text", "").strip()]
        if per_file and len(rows) > per_file:
            rows = rng.sample(rows, per_file)
        for r in rows:
            r["source"] = Path(file).stem
        lines += rows
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order]
    if not hits.any():
        return 0.0
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def precision_at(scores: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    return float(relevant[np.argsort(-scores, kind="stable")[:k]].mean())


def retrieval(tmp: Path) -> dict:
    stores = {name: open_store(build_corpus(name, tmp)) for name in CORPORA}
    rows = {name: store.frame.to_dicts() for name, store in stores.items()}
    per_query, started = [], time.perf_counter()
    for corpus, query, is_relevant in QUERIES:
        store = stores[corpus]
        relevant = np.array([bool(is_relevant(r)) for r in rows[corpus]])
        sae = sae_search_scores(store, query)
        dense = dense_scores(store, query)
        hybrid = reciprocal_rank_fusion([sae, dense], np.arange(store.n_docs), positive_only=(0,))
        per_query.append({"corpus": corpus, "query": query, "docs": store.n_docs, "relevant": int(relevant.sum()),
                          **{f"{mode}_ap": round(average_precision(s, relevant), 3)
                             for mode, s in (("sae", sae), ("dense", dense), ("hybrid", hybrid))},
                          **{f"{mode}_p10": precision_at(s, relevant)
                             for mode, s in (("sae", sae), ("dense", dense), ("hybrid", hybrid))}})
    summary = {f"mean_{k}": round(float(np.mean([q[k] for q in per_query])), 3)
               for k in ("sae_ap", "dense_ap", "hybrid_ap", "sae_p10", "dense_p10", "hybrid_p10")}
    return {"queries": len(per_query), **summary, "seconds_for_queries": round(time.perf_counter() - started, 1),
            "per_query": per_query}


LANGUAGE_EXAMPLES = [  # our own sentences, one per language, to select language concepts with --like
    "The weather is nice today and we are going to the park.",
    "Das Wetter ist heute schön und wir gehen in den Park.",
    "Il fait beau aujourd'hui et nous allons au parc.",
    "Hoy hace buen tiempo y vamos al parque.",
    "الطقس جميل اليوم وسنذهب إلى الحديقة.",
    "आज मौसम अच्छा है और हम पार्क जा रहे हैं।",
    "今日は天気が良いので公園に行きます。",
    "今天天气很好，我们要去公园。",
]
TOPIC_QUERY = "science, technology, travel, politics, sports, health, medicine, entertainment, geography"


def clustering(tmp: Path) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    corpus = tmp / "sib200.jsonl"
    corpus.write_text("".join(open(f, encoding="utf-8").read() for f in sorted((DATA / "sib200").glob("*.jsonl"))),
                      encoding="utf-8")
    store = open_store(corpus)
    topic, lang = store.frame["topic"].to_numpy(), store.frame["lang"].to_numpy()

    def scores(assigned: np.ndarray, seconds: float) -> dict:
        return {"ari_topic": round(adjusted_rand_score(topic, assigned), 3),
                "ari_lang": round(adjusted_rand_score(lang, assigned), 3), "seconds": round(seconds, 1)}

    out = {"docs": store.n_docs}
    for name, k, concepts in (
            ("topic_concepts", 7, select_concepts(TOPIC_QUERY, store)),
            ("language_concepts", 8, select_concepts(None, store, like=LANGUAGE_EXAMPLES, top=30)),
            ("all_concepts_k7", 7, None), ("all_concepts_k8", 8, None)):
        started = time.perf_counter()
        result = cluster(store, concepts, ClusterConfig(k=k))
        out[name] = {**scores(result.assignments["cluster"].to_numpy(), time.perf_counter() - started),
                     "latents": len(concepts) if concepts is not None else store.d_sae, "notes": result.notes}
    from saeembed.embedding.dense import DenseCache

    dense = DenseCache().embed(store.frame["text"].to_list())
    for k in (7, 8):
        started = time.perf_counter()
        assigned = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(dense)
        out[f"dense_kmeans_k{k}"] = scores(assigned, time.perf_counter() - started)
    # The English reader cannot see topics across scripts; within English alone it can.
    english = np.flatnonzero(lang == "eng_Latn")
    sub = store.take(english)
    out["english_only"] = {"docs": len(english)}
    for name, concepts in (("topic_concepts", select_concepts(TOPIC_QUERY, sub)), ("all_concepts", None)):
        result = cluster(sub, concepts, ClusterConfig(k=7))
        out["english_only"][name] = round(adjusted_rand_score(topic[english], result.assignments["cluster"]), 3)
    assigned = KMeans(n_clusters=7, n_init=4, random_state=0).fit_predict(dense[english])
    out["english_only"]["dense_kmeans"] = round(adjusted_rand_score(topic[english], assigned), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("retrieval", "clustering"))
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "clustering"):
            out["clustering_sib200"] = clustering(Path(tmp))
        if args.only in (None, "retrieval"):
            out["retrieval"] = retrieval(Path(tmp))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
