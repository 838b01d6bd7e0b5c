"""The clustering report: sizes (unassigned documents counted), a 2-D map of the documents coloured by
cluster, the cross-tab against a metadata column, and per cluster its distinctive concepts and central
documents with the concepts' peaks highlighted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from saeembed.report import plots
from saeembed.report._page import clip_plain, latent_name, render, span_segments

if TYPE_CHECKING:
    from saeembed.analysis.cluster import ClusterResult
    from saeembed.store import Store

# Documents drawn on the map at most (a random sample, the same every time), and values of a metadata
# column shown in the cross-tab (the rest summed as "(other)").
MAP_POINTS = 4000
CROSSTAB_VALUES = 12
UNASSIGNED = {-1: "no selected concept", -2: "noise (HDBSCAN)"}


def write_cluster_report(result: ClusterResult, path: str | Path, by: str | Sequence[Any] | None = None, *,
                         store: Store | None = None, seed: int = 0) -> Path:
    """Write the `saeembed.analysis.cluster.ClusterResult` as one self-contained HTML page at `path`.

    Args:
        by: a metadata column of `store` (or one value per document, in the order of
            `result.assignments`) to cross-tabulate the clusters against.
        store: the store that was clustered: gives the document map and the highlighted peaks in the
            central documents (without it the page has neither).
    """
    from saeembed.errors import SaeEmbedError

    assignment = result.assignments["cluster"].to_numpy()
    description = result.description
    order = [int(c) for c in description["cluster"]]  # largest first
    colours = {c: plots.colour(i) for i, c in enumerate(order)}
    names = {c: f"cluster {c}" for c in order}
    unassigned: list[dict[str, Any]] = [{"cluster": c, "what": what, "size": int((assignment == c).sum())}
                                        for c, what in UNASSIGNED.items() if (assignment == c).any()]
    sizes = [(names[c], int(s), colours[c]) for c, s in zip(order, description["size"])]
    sizes += [(u["what"], u["size"], plots.GREY) for u in unassigned]
    if store is not None and store.n_docs != len(assignment):
        raise SaeEmbedError(f"the store has {store.n_docs:,} documents, the clustering {len(assignment):,}: "
                            f"pass the store that was clustered")
    values = _by_values(by, store, len(assignment))
    clusters = []
    distinctive = result.distinctive
    for row in description.iter_rows(named=True):
        c = int(row["cluster"])
        concepts = distinctive.filter(distinctive["cluster"] == c).sort("diff", descending=True).to_dicts()
        clusters.append({"cluster": c, "size": row["size"], "colour": colours[c], "concepts": concepts,
                         "documents": _central(row, concepts, store)})
    summary = result.summary()
    context = {
        "title": f"clusters: {result.method} on {summary.axis}", "summary": summary, "notes": list(summary.notes),
        "sizes": plots.bars([s[0] for s in sizes], [s[1] for s in sizes], "documents", "cluster sizes",
                            [s[2] for s in sizes]) if sizes else None,
        "map": _map(result, store, assignment, names, colours, seed) if store is not None else None,
        "by": by if isinstance(by, str) else getattr(by, "name", None) or "the given values",
        "crosstab": _crosstab(assignment, values, order, colours) if values is not None else None,
        "clusters": clusters,
        "concepts": result.concepts.frame().to_dicts() if result.concepts is not None else [],
    }
    return render("cluster.html", path, **context)


def _by_values(by: Any, store: Any, n: int) -> np.ndarray | None:
    from saeembed.errors import SaeEmbedError

    if by is None:
        return None
    if isinstance(by, str):
        if store is None:
            raise SaeEmbedError(f"cross-tabulating against the column {by!r} needs the store (store=...)")
        if by not in store.frame.columns:
            fields = ", ".join(c for c in store.frame.columns if c not in ("text", "n_tokens", "dense"))
            raise SaeEmbedError(f"{store.path}: no column {by!r} to cross-tabulate; its fields are: {fields}")
        by = store.frame[by].to_list()
    values = np.array(["(missing)" if v is None else str(v) for v in by], dtype=object)
    if len(values) != n:
        raise SaeEmbedError(f"{len(values):,} values to cross-tabulate against {n:,} clustered documents")
    return values


def _crosstab(assignment: np.ndarray, values: np.ndarray, order: list[int], colours: dict[int, str]) -> dict:
    """Counts of documents per cluster (rows, unassigned last) and value (columns, most frequent first), each
    cell shaded by its share of the row; agreement (ARI, NMI) over the assigned documents."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    kinds, counts = np.unique(values, return_counts=True)
    top = [str(v) for v in kinds[np.argsort(-counts, kind="stable")][:CROSSTAB_VALUES]]
    other = len(kinds) > len(top)
    columns = top + (["(other)"] if other else [])
    index = {v: i for i, v in enumerate(top)}
    column_of = np.array([index.get(v, len(top)) for v in values])
    rows = []
    for c in [*order, *(u for u in UNASSIGNED if (assignment == u).any())]:
        cells = np.bincount(column_of[assignment == c], minlength=len(columns))[: len(columns)]
        total = int(cells.sum())
        rows.append({"name": f"cluster {c}" if c >= 0 else UNASSIGNED[c], "colour": colours.get(c, plots.GREY),
                     "total": total, "cells": [(int(n), n / max(total, 1)) for n in cells]})
    assigned = assignment >= 0
    agreement = None
    if assigned.sum() > 1:
        agreement = {"ari": float(adjusted_rand_score(values[assigned], assignment[assigned])),
                     "nmi": float(normalized_mutual_info_score(values[assigned], assignment[assigned]))}
    return {"columns": columns, "rows": rows, "agreement": agreement, "n_values": len(kinds)}


def _map(result: ClusterResult, store: Store, assignment: np.ndarray, names: dict[int, str],
         colours: dict[int, str], seed: int) -> Any:
    """The first two principal components of the documents' log activations on the clustered latents
    (rows L2-normalised; sparse PCA, centred implicitly), drawn for a random sample of documents; those
    with none of the selected concepts would all sit at one point and are left out."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    columns = result.concepts.latents if result.concepts is not None else np.arange(store.d_sae)
    candidates = np.flatnonzero(assignment != -1)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(candidates, MAP_POINTS, replace=False)) if len(candidates) > MAP_POINTS else candidates
    if len(rows) < 3:
        return None
    x = store.matrix[rows][:, columns].tocsr().astype(np.float64)
    x.data = np.log1p(np.maximum(x.data, 0))
    x = normalize(x)
    if x.shape[1] <= 2:
        xy = np.zeros((len(rows), 2))
        xy[:, : x.shape[1]] = x.toarray()
        how = "the documents' scaled activations of the selected latents"
    else:
        pca = PCA(n_components=2, svd_solver="arpack", random_state=seed)
        xy = pca.fit_transform(x)
        share = float(pca.explained_variance_ratio_.sum())
        how = f"principal components of the clustered latents' log activations ({share:.0%} of the variance)"
    groups = assignment[rows]
    legend = {c: f"{names[c]} ({int((assignment == c).sum()):,})" for c in names}
    if (groups == -2).any():
        legend[-2] = UNASSIGNED[-2]
    sample = f"{len(rows):,} of {len(candidates):,} documents" if len(rows) < len(candidates) else \
        f"{len(rows):,} documents"
    return {"svg": plots.cluster_map(xy, groups, legend, colours), "caption": f"{sample}; {how}."}


def _central(row: dict[str, Any], concepts: list[dict[str, Any]], store: Any) -> list[dict[str, Any]]:
    """The cluster's central documents; with the store, the peaks of its distinctive concepts that fire in
    each (up to three) highlighted."""
    import polars as pl

    from saeembed.spans import peak_span

    ids, texts = list(row["central_ids"]), list(row["central_texts"])
    if store is None:
        return [{"id": i, "text": clip_plain(t)} for i, t in zip(ids, texts)]
    found = store.frame.select(pl.col("id").cast(pl.Utf8), pl.int_range(pl.len()).alias("row")).filter(
        pl.col("id").is_in(ids))
    row_of = {i: r for i, r in zip(found["id"].to_list()[::-1], found["row"].to_list()[::-1])}  # first wins
    out = []
    for doc_id, text in zip(ids, texts):
        spans = []
        if doc_id in row_of:
            for concept in concepts:
                span = peak_span(store, row_of[doc_id], int(concept["latent"]))
                if span:
                    spans.append((*span, latent_name(concept["latent"], concept["label"])))
                if len(spans) == 3:
                    break
        out.append({"id": doc_id, "text": span_segments(text, spans) if spans else clip_plain(text)})
    return out
