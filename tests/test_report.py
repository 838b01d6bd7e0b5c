"""HTML reports built from real (small) analysis results on planted stores, opened in headless Chromium:
the findings, the highlighted peaks (<mark>) and the SVG plots are in the DOM, data never becomes markup,
the page raises no JavaScript error and asks for nothing over the network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.associations import associations
from saeembed.analysis.cluster import NO_CONCEPT, cluster
from saeembed.analysis.concepts import select_concepts
from saeembed.analysis.config import ClusterConfig, CorrelationConfig, DiffConfig, RiskConfig, SearchConfig
from saeembed.analysis.correlations import correlations
from saeembed.analysis.diff import diff
from saeembed.analysis.risk import fit_risk
from saeembed.analysis.search import search
from saeembed.labels import Labels
from saeembed.report import (
    write_cluster_report,
    write_correlations_report,
    write_diff_report,
    write_risk_report,
    write_search_report,
)
from saeembed.report._page import Segment, span_segments, split_marked, write_atomic
from saeembed.spans import peak_span
from saeembed.store import load_store
from saeembed.synthetic import fake_meta, planted_store, random_columns, vectors_from_columns, write_store

CHROMIUM = shutil.which("chromium")
D = 30
# Data that must stay text: a label that would run script if it became markup, a '$' pair matplotlib would
# read as math, and texts full of tags, ampersands and the peak markers themselves.
HOSTILE = "<img src=x onerror=alert(1)> $x$ & co"
LABELS = Labels(D, {0: "football · goal", 1: "soccer · striker", 2: "stock · market", 3: "sarcasm · irony",
                    4: "rain · weather", 7: HOSTILE}, {}, {})


def hostile_texts(n: int, tag: str) -> list[str]:
    return [f"<b>{tag} {i}</b> says a << b & c >> d <script>alert({i})</script> then more words follow"
            for i in range(n)]


class Opened(NamedTuple):
    page: Any
    problems: list[str]
    """Console errors, page errors and dialogs (an alert would mean injected script ran)."""
    outside: list[str]
    """Requests for anything but the page itself and data: URLs."""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """Open a report page in a fresh context: every request but the page's own file and data: URLs is
    recorded and refused; console errors, page errors and dialogs are recorded; a screenshot is written."""
    contexts = []

    def opened(path: Path) -> Opened:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        contexts.append(context)
        problems: list[str] = []
        outside: list[str] = []
        uri = path.resolve().as_uri()

        def route(r: Any) -> None:
            if r.request.url == uri:
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("request", lambda request: None if request.url.startswith(("data:", uri)) else
                outside.append(request.url))
        page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                if message.type in ("error", "warning") else None)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.goto(uri, wait_until="load")
        # screenshots at a narrow and a wide window, kept in the test's folder; the narrow one must not
        # need a horizontal scroll bar (wide tables and plots shrink or wrap)
        for width in (800, 1400):
            page.set_viewport_size({"width": width, "height": 900})
            shot = tmp_path / f"{path.stem}-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000, "the screenshot shows a rendered page"
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 1:
                problems.append(f"at {width} px the page is {overflow} px wider than the window")
        page.set_viewport_size({"width": 1200, "height": 900})
        return Opened(page, problems, outside)

    yield opened
    for context in contexts:
        context.close()


def assert_clean(opened: Opened, html: str) -> None:
    """Nothing went wrong and nothing of the data became markup."""
    assert opened.problems == []
    assert opened.outside == []
    page = opened.page
    assert page.locator("script").count() == 1, "only the page's own filter script"
    assert page.locator("img, iframe, object, embed, link, i, u").count() == 0, "tags in the data stay text"
    for raw in ("<img src=x", "<script>alert", "<i>document", "<u>", "<b>A ", "<b>B ", "<b>doc "):
        assert raw not in html
    for plot in page.locator("svg.plot").all():
        box = plot.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 50, "every plot is drawn"


def marks(page: Any) -> list[str]:
    return [m.inner_text() for m in page.locator("mark").all()]


# -- diff -----------------------------------------------------------------------------------------------

@pytest.fixture
def diff_result(tmp_path):
    rates_a, rates_b = np.full(D, 0.1), np.full(D, 0.1)
    rates_a[[3, 7]], rates_b[[3, 7]] = (0.5, 0.02), (0.2, 0.25)
    a = planted_store(tmp_path / "a.parquet", 600, rates_a, seed=1, fields={"text": hostile_texts(600, "A")})
    b = planted_store(tmp_path / "b.parquet", 500, rates_b, seed=2, fields={"text": hostile_texts(500, "B")})
    return diff(a, b, DiffConfig(holdout=0.3), names=["sarcastic", "plain"], labels=LABELS), (a, b)


def test_diff_page_shows_the_themes_their_peaks_and_the_plots(diff_result, open_page, tmp_path):
    result, stores = diff_result
    assert sorted(result.themes["lead"].to_list()) == [3, 7], "the planted differences"
    path = write_diff_report(result, tmp_path / "out" / "diff.html")
    html = path.read_text()
    assert path.stat().st_size < 300_000
    opened = open_page(path)
    page = opened.page
    assert_clean(opened, html)

    header = page.locator("header").inner_text()
    assert "sarcastic (600 documents), plain (500 documents)" in header
    assert "2 findings" in header and "2 themes" in header and "Mantel-Haenszel" in header
    assert result.length.sentence in header
    assert "replicate on the 30% held out" in header
    rows = page.locator("tbody.theme")
    assert rows.count() == len(result.themes) == 2
    body = page.locator("#themes").inner_text()
    assert "sarcasm · irony" in body and HOSTILE in body, "labels shown as text, the hostile one too"
    assert "replicated" in body

    # each theme's example: the mark is the lead's peak in the document named beside it
    for row in result.themes.iter_rows(named=True):
        store = stores[0] if row["more_in"] == "sarcastic" else stores[1]
        doc = int(np.flatnonzero(store.frame["id"].to_numpy() == row["example_with_id"])[0])
        start, end = peak_span(store, doc, row["lead"])
        shown = page.locator(f"#theme-{row['theme']} mark")
        assert shown.count() == 1
        assert shown.inner_text() == store.frame["text"][doc][start:end]
    assert len(marks_in(page.locator("#themes"))) == 2, "the examples without the latent have no mark"

    svgs = page.locator("svg.plot")
    assert svgs.count() == 3, "forest, volcano, length distributions"
    forest = page.locator("svg[aria-label='forest plot']")
    assert "sarcasm · irony" in forest.inner_html(), "plot text stays text (svg.fonttype none)"
    assert "&lt;img src=x" in forest.inner_html() and "$x$" in forest.text_content(), "escaped, no mathtext"
    assert page.locator("svg[aria-label='volcano plot']").count() == 1
    assert page.locator("svg[aria-label='length distributions']").count() == 1

    box = page.locator("input.filter")
    box.fill("irony")
    assert page.locator("tbody.theme:visible").count() == 1
    assert page.locator("#themes-status").inner_text() == "1 of 2 shown"
    box.fill("nothing matches this")
    assert page.locator("tbody.theme:visible").count() == 0
    box.fill("")
    assert page.locator("tbody.theme:visible").count() == 2


def test_an_empty_diff_still_makes_a_page(tmp_path, open_page):
    a = planted_store(tmp_path / "a.parquet", 200, np.full(D, 0.1), seed=1)
    b = planted_store(tmp_path / "b.parquet", 200, np.full(D, 0.1), seed=2)
    result = diff(a, b, labels=LABELS)
    assert len(result.themes) == 0
    path = write_diff_report(result, tmp_path / "empty.html")
    opened = open_page(path)
    assert_clean(opened, path.read_text())
    assert "No latent differs" in opened.page.inner_text("main")
    assert opened.page.locator("svg.plot").count() == 2, "the volcano and the lengths still tell something"


def test_diff_page_against_several_corpora_by_mean_activation(tmp_path, open_page):
    rates = [np.full(D, 0.1) for _ in range(3)]
    rates[0][3] = 0.6
    stores = [planted_store(tmp_path / f"{n}.parquet", 300, r, seed=n) for n, r in enumerate(rates)]
    result = diff(stores[0], stores[1:], DiffConfig(measure="mean"), names=["t", "m1", "m2"], labels=LABELS)
    assert 3 in result.themes["lead"].to_list()
    path = write_diff_report(result, tmp_path / "vs.html")
    opened = open_page(path)
    assert_clean(opened, path.read_text())
    head = opened.page.locator("#themes thead").inner_text()
    assert "t" in head and "other" in head and "%" not in opened.page.locator("tbody.theme").first.inner_text()
    assert "vs m" in opened.page.locator("tbody.theme").first.inner_text(), "which other corpus it was held against"


# -- cluster and search -----------------------------------------------------------------------------------

N = 600
GROUP = np.repeat([0, 1, 2], N // 3)  # sport, finance, weather documents
KINDS = ("sport", "finance", "weather")


@pytest.fixture
def topic_store(tmp_path):
    """Latents 0-1 fire in sport documents, 2-3 in finance, 4 in weather; the others at random."""
    rng = np.random.default_rng(0)
    columns = random_columns(N, np.full(D, 0.15), rng)
    for latent, group in ((0, 0), (1, 0), (2, 1), (3, 1), (4, 2)):
        members = np.flatnonzero(GROUP == group)
        columns[latent] = np.sort(rng.choice(members, int(0.8 * len(members)), replace=False))
    texts = [f"{KINDS[g]} <i>document</i> {i}: some filler words here & there" for i, g in enumerate(GROUP)]
    write_store(tmp_path / "s.parquet", vectors_from_columns(N, columns, rng),
                {"text": texts, "kind": [KINDS[g] for g in GROUP]}, fake_meta(D))
    return load_store(tmp_path / "s.parquet")


def test_cluster_page_shows_sizes_map_crosstab_and_central_documents(topic_store, open_page, tmp_path):
    store = topic_store
    selected = select_concepts("0, 1, 2, 3, 4", store, labels=LABELS)
    result = cluster(store, selected, ClusterConfig(method="kmeans", k=3), labels=LABELS)
    unassigned = int((result.assignments["cluster"] == NO_CONCEPT).sum())
    assert unassigned > 0
    path = write_cluster_report(result, tmp_path / "cluster.html", by="kind", store=store)
    html = path.read_text()
    opened = open_page(path)
    page = opened.page
    assert_clean(opened, html)

    header = " ".join(page.locator("header").inner_text().split())
    assert all(line in header for line in result.summary().lines()), "the page's lead is the summary record"
    assert f"unassigned: {unassigned:,} of" in header
    assert page.locator("section.card").count() == 3
    assert page.locator("svg[aria-label='cluster sizes']").count() == 1
    assert page.locator("svg[aria-label='document map']").count() == 1
    header = page.locator("table.crosstab thead th").all_inner_texts()
    assert set(header[1:4]) == set(KINDS) and header[4] == "total"
    assert "adjusted Rand index 1.000" in page.inner_text("main"), "k-means on the topic latents finds the topics"
    # the central documents' marks are peaks of the cluster's distinctive concepts
    for row in result.description.iter_rows(named=True):
        card = page.locator(f"#cluster-{row['cluster']}")
        concepts = result.distinctive.filter(pl.col("cluster") == row["cluster"])
        doc = int(row["central_ids"][0])
        first = card.locator("ul.doc li").first.locator("mark")
        assert first.count() >= 1
        spans = {store.frame["text"][doc][slice(*peak_span(store, doc, int(latent)))]
                 for latent in concepts["latent"] if peak_span(store, doc, int(latent))}
        assert set(m.inner_text() for m in first.all()) <= spans | {""} and first.first.inner_text() in spans


def test_cluster_page_without_the_store_crosstabs_given_values(topic_store, tmp_path):
    result = cluster(topic_store, None, ClusterConfig(method="kmeans", k=3), labels=LABELS)
    kinds = pl.Series("kind", [KINDS[g] for g in GROUP])
    html = write_cluster_report(result, tmp_path / "c.html", by=kinds).read_text()
    assert "Clusters against kind" in html and "document map" not in html and "<mark" not in html
    assert html.count('class="card row"') == 3


def test_search_page_ranks_hits_with_their_concepts_and_peaks(topic_store, open_page, tmp_path):
    store = topic_store
    result = search(store, "0, 1", SearchConfig(top=8, k=2), labels=LABELS)
    path = write_search_report(result, tmp_path / "search.html")
    opened = open_page(path)
    page = opened.page
    assert_clean(opened, path.read_text())
    hits = page.locator("#hits tbody.row")
    assert hits.count() == 8
    assert "football · goal" in page.locator("#hits").inner_text()
    assert page.locator("svg[aria-label='scores by rank']").count() == 1
    for i, row in enumerate(result.table.iter_rows(named=True)):
        doc = int(row["id"])
        strongest = row["top_latents"][0]
        start, end = peak_span(store, doc, strongest)
        assert hits.nth(i).locator("mark").inner_text() == store.frame["text"][doc][start:end]
        assert hits.nth(i).locator(".id").inner_text().startswith(row["id"])


# -- risk -----------------------------------------------------------------------------------------------

def test_risk_page_shows_roc_curves_calibration_and_top_concepts(tmp_path, open_page):
    from sklearn.metrics import roc_auc_score

    from tests.test_risk import LABELS as RISK_LABELS
    from tests.test_risk import risky_store

    store = risky_store(tmp_path / "r.parquet")
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=50), group="question_id", labels=RISK_LABELS)
    # the out-of-fold scores kept on the report are those its AUROCs were computed from
    assert list(report.oof_scores) == report.table["features"].to_list()
    for name, auroc in zip(report.table["features"], report.table["auroc"]):
        assert roc_auc_score(report.y, report.oof_scores[name]) == pytest.approx(auroc)
    path = write_risk_report(report, tmp_path / "risk.html", store=store)
    opened = open_page(path)
    page = opened.page
    assert_clean(opened, path.read_text())

    header = " ".join(page.locator("header").inner_text().split())
    assert "beats the best baseline" in header and report.summary().lines()[1][1:] in header
    table = page.locator("main table").first
    assert table.locator("tbody tr").count() == len(report.table)
    roc = page.locator("svg[aria-label='ROC curves']")
    assert roc.count() == 1
    for name, auroc in zip(report.table["features"], report.table["auroc"]):
        assert f"{name} ({auroc:.3f})" in roc.text_content(), "one curve per feature set, in the legend"
    assert page.locator("svg[aria-label='calibration plot']").count() == 1
    assert "Brier score" in page.inner_text("main")
    assert page.locator("svg[aria-label='probe weights']").count() == 1
    concepts = page.locator("#concepts tbody.row")
    assert concepts.count() == len(report.top_concepts)
    assert "made-up facts" in concepts.first.inner_text()
    first = concepts.first
    assert first.locator("mark").count() == 1 and "· risky" in first.inner_text(), \
        "a concept that raises risk shows a risky document where it fires"


# -- correlations ------------------------------------------------------------------------------------------

@pytest.fixture
def pair_store(tmp_path):
    from tests.test_correlations import N as PAIRS_N
    from tests.test_correlations import planted_columns, vectors_rows

    rng = np.random.default_rng(0)
    vectors = vectors_from_columns(PAIRS_N, planted_columns(rng), rng)
    topic = np.where(np.isin(np.arange(PAIRS_N), vectors_rows(vectors, 8)), "x", "y")
    texts = hostile_texts(PAIRS_N, "doc")
    write_store(tmp_path / "c.parquet", vectors, {"topic": topic.tolist(), "text": texts}, fake_meta(40))
    return load_store(tmp_path / "c.parquet")


PAIR_LABELS = Labels(40, {0: "rain weather", 1: "umbrella <u>", 4: "python code", 8: HOSTILE}, {}, {})


def test_correlations_page_shows_pairs_their_npmi_and_examples(pair_store, open_page, tmp_path):
    store = pair_store
    result = correlations(store, CorrelationConfig(), labels=PAIR_LABELS)
    assert {(0, 1), (4, 5)} <= set(zip(result.table["latent_a"], result.table["latent_b"]))
    path = write_correlations_report(result, tmp_path / "corr.html", store=store)
    opened = open_page(path)
    page = opened.page
    assert_clean(opened, path.read_text())
    rows = page.locator("#pairs tbody.row")
    assert rows.count() == len(result.table)
    assert "umbrella <u>" in page.locator("#pairs").inner_text()
    bars = page.locator("svg[aria-label='strongest pairs']")
    assert bars.count() == 1 and "umbrella" in bars.inner_html(), "every bar is a reported pair, named"
    for i, pair in enumerate(result.table.iter_rows(named=True)):
        example = rows.nth(i).locator("td.doc")
        doc = int(example.locator(".id").inner_text())
        peaks = [peak_span(store, doc, pair[side]) for side in ("latent_a", "latent_b")]
        assert all(peaks), "the example is a document where both latents fire"
        text = store.frame["text"][doc]
        assert "".join(marks_in(example)) == "".join(text[s:e] for s, e in merged(peaks))


def test_associations_page(pair_store, open_page, tmp_path):
    store = pair_store
    result = associations(store, "topic", labels=PAIR_LABELS)
    path = write_correlations_report(result, tmp_path / "assoc.html", store=store)
    opened = open_page(path)
    page = opened.page
    assert_clean(opened, path.read_text())
    first = page.locator("#associations tbody.row").first
    assert HOSTILE in first.inner_text() and "topic: x" in first.inner_text()
    assert first.locator("mark").count() == 1
    assert page.locator("svg[aria-label='associations']").count() == 1


def marks_in(locator: Any) -> list[str]:
    return [m.inner_text() for m in locator.locator("mark").all()]


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


# -- the pieces, without a browser ---------------------------------------------------------------------

def test_marks_are_split_from_the_text_never_parsed_as_html():
    assert split_marked("a <<peak>> b") == [Segment("a "), Segment("peak", True), Segment(" b")]
    assert split_marked("x << y then <<tok>> z") == [Segment("x << y then "), Segment("tok", True), Segment(" z")]
    assert split_marked("shift a << 2 only") == [Segment("shift a << 2 only")]
    assert split_marked("") == [] and split_marked(None) == []
    spans = span_segments("0123456789", [(2, 4, "a"), (3, 6, "b"), (8, 9, "c")])
    assert spans == [Segment("01"), Segment("2345", True, "a; b"), Segment("67"), Segment("8", True, "c"),
                     Segment("9")]
    long = span_segments("x" * 1000 + "PEAK" + "y" * 1000, [(1000, 1004, "")], width=50)
    assert [s.mark for s in long] == [False, True, False] and sum(len(s.text) for s in long) < 120


def test_pages_are_written_atomically(tmp_path):
    path = tmp_path / "deep" / "page.html"
    write_atomic(path, "first")
    write_atomic(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["page.html"], "no temporary file left"
    assert path.stat().st_mode & 0o777 != 0o600, "an ordinary file, not mkstemp's private one"


# -- the commands' --html -------------------------------------------------------------------------------

def test_every_command_writes_its_page_with_html(diff_result, topic_store, tmp_path):
    """The CLI only passes --html through: each command's page exists, is whole and holds its plots."""
    from typer.testing import CliRunner

    from commands.app import app

    a, b = (str(s.path) for s in diff_result[1])
    store = str(topic_store.path)
    runs = {
        "diff": ["diff", a, b],
        "correlations": ["correlations", a, "--min-support", "5"],
        "cluster": ["cluster", store, "--concepts", "0,1,2,3,4", "--clusters", "3", "--by", "kind"],
        "search": ["search", store, "0,1", "--top", "5"],
        "risk": ["risk", "fit", store, "--label", "kind", "--positive", "sport", "-o", str(tmp_path / "probe"),
                 "--bootstrap", "50"],
    }
    for name, args in runs.items():
        page = tmp_path / f"{name}.html"
        result = CliRunner().invoke(app, [*args, "--html", str(page), "-q"])
        assert result.exit_code == 0, (name, result.output)
        html = page.read_text(encoding="utf-8")
        assert html.rstrip().endswith("</html>"), name
        assert ("<svg" in html) == (name != "correlations"), name  # random latents: no pair, so no bars
    refused = CliRunner().invoke(app, ["diff", a, b, "--html", str(tmp_path)])
    assert refused.exit_code == 1 and "is a folder" in refused.output  # checked before any work


def test_pages_drop_control_characters_and_bidi_overrides(tmp_path):
    """Raw ESC sequences and U+202E (which reads the rest of a line backwards) reached the pages; they are
    stripped from every value shown, as the terminal strips them."""
    evil = "plain\x1b[2J\x07 \u202eevil\u2066 line\u2028sep and enough words to hold every peak"
    a = planted_store(tmp_path / "a.parquet", 200, np.full(D, 0.1), seed=1, fields={"text": [evil] * 200})
    b = planted_store(tmp_path / "b.parquet", 200, np.full(D, 0.1), seed=2)
    html = write_diff_report(diff(a, b, names=[evil, "b"], labels=LABELS), tmp_path / "d.html").read_text()
    for character in ("\x1b", "\x07", "\u202e", "\u2066", "\u2028"):
        assert character not in html, repr(character)
    assert "plain[2J evil line sep and" in html
