"""The search report: the query's concepts, the scores by rank, and the ranked hits, each with the concepts
that contributed most and the peak of the strongest highlighted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from saeembed.report import plots
from saeembed.report._page import latent_name, marked, render
from saeembed.store import COUNT_STATS

if TYPE_CHECKING:
    from saeembed.analysis.search import SearchResult

# Columns of the hits table not shown among the document's other fields (shown elsewhere, or internal).
SHOWN = ("rank", "id", "score", "top_latents", "top_labels", "peak_start", "peak_end", "text", "n_tokens", "dense",
         *COUNT_STATS)
CONCEPTS_SHOWN = 30


def write_search_report(result: SearchResult, path: str | Path, *, query: str | None = None) -> Path:
    """Write the `saeembed.analysis.search.SearchResult` as one self-contained HTML page at `path`;
    `query`: the query as typed (default the one its concepts were selected by; dense search has none)."""
    concepts = result.concepts
    query = query if query is not None else (concepts.query if concepts is not None else "")
    hits = []
    for row in result.table.iter_rows(named=True):
        contributors = [latent_name(latent, label) for latent, label
                        in zip(row.get("top_latents") or [], row.get("top_labels") or [])]
        hits.append({"rank": row["rank"], "id": row["id"], "score": row["score"], "concepts": contributors,
                     # the strongest contributor's peak (dense search has none)
                     "text": marked(row["text"], row.get("peak_start"), row.get("peak_end"),
                                    contributors[0] if contributors else ""),
                     "fields": {k: v for k, v in row.items() if k not in SHOWN and v is not None}})
    selected = concepts.frame().head(CONCEPTS_SHOWN).to_dicts() if concepts is not None else []
    scores = None
    if hits:
        scores = plots.bars([f"{h['rank']}. {h['id']}" for h in hits], [h["score"] for h in hits],
                            "score" if result.mode == "sae" else f"score ({result.mode})", "scores by rank",
                            width=30)
    context = {"title": f"search: {query}" if query else "search", "summary": result.summary(query), "hits": hits,
               "concepts": selected, "n_concepts": len(concepts) if concepts is not None else 0, "scores": scores}
    return render("search.html", path, **context)
