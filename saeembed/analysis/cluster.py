"""Targeted clustering: group documents by the concepts the user picks (or by every latent).

Documents are described by which selected latents fire in them (binarised). Methods:
- spectral on Jaccard similarity: the full N x N matrix up to `dense_limit` documents, beyond that a
  sparse k-nearest-neighbour Jaccard graph built block by block (never N x N). By default the Jaccard
  is weighted (Ruzicka: sum of minima over sum of maxima of the activations), so how strongly a concept
  is present counts, not only whether; `similarity="jaccard"` is the paper's binary one;
- HDBSCAN (the `hdbscan` package) on a 50-dimensional SVD of the L2-normalised activations (weighted
  similarity, the default; the binary rows with `similarity="jaccard"`); it finds the number of
  clusters, and gives each document a membership strength and a GLOSH outlier score;
- k-means on the L2-normalised binary rows (sparse).
Each cluster is described by its size, its most distinctive latents (frequency inside minus outside,
over all latents) and its most central documents. Every document also gets a membership strength and an
outlier score in [0, 1], computed as `saeembed.analysis.assign` computes them for new documents:
- spectral: its mean similarity (same Jaccard) to the documents of each cluster: membership = its
  cluster's share of these means; outlier = the share of the clustered documents that are more similar
  on average to their own cluster than it is to its own (a quantile of 1 - that mean similarity);
- k-means: fuzzy c-means memberships from the distances to the centroids (1 / d^2, normalised);
  outlier = the distance quantile of its distance to the nearest centroid;
- HDBSCAN: its probability of belonging to its cluster, and GLOSH.
Documents outside the axis (cluster -1) get membership 0 and outlier score 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from saeembed.analysis.concepts import Concepts
from saeembed.analysis.config import ClusterConfig
from saeembed.analysis.summaries import Summary, count
from saeembed.errors import SaeEmbedError
from saeembed.store import Store, document_frequency, present

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csr_matrix

    from saeembed.labels.store import Labels

NO_CONCEPT = -1  # documents where no selected latent fires
NOISE = -2  # HDBSCAN's outliers


@dataclass
class Fitted:
    """What a clustering learned about its documents: enough to place new ones
    (`saeembed.analysis.assign` saves it and assigns with it)."""

    latents: np.ndarray
    """The latents clustered on (the selected concepts, or every latent)."""
    labels: np.ndarray
    """Cluster of each document that carries a selected concept, in store order (NOISE: HDBSCAN noise)."""
    values: csr_matrix
    """scipy CSR [len(labels), len(latents)]: those documents' activations (> 0) on the latents."""
    unit: float
    """The level grid's unit (90th percentile of `values`): spectral with weighted Jaccard."""
    reference: np.ndarray | None = None
    """spectral, kmeans: the documents' distances (ascending) that outlier scores are quantiles of."""
    centroids: np.ndarray | None = None
    """kmeans: [k, len(latents)] in the space of L2-normalised binary rows."""
    components: np.ndarray | None = None
    """hdbscan: the SVD's components [c, len(latents)] (None: no reduction, len(latents) <= 50)."""
    coords: np.ndarray | None = None
    """hdbscan: the documents as HDBSCAN saw them [len(labels), c]."""
    model: Any = None
    """hdbscan: the fitted hdbscan.HDBSCAN (in memory only; a saved clustering refits it from `coords`)."""


@dataclass
class ClusterResult:
    assignments: pl.DataFrame
    """polars DataFrame: id, cluster (-1: none of the selected concepts fires; -2: HDBSCAN noise),
    membership (strength of belonging to its cluster, in [0, 1]; 0 outside any cluster) and
    outlier_score (in [0, 1]: GLOSH for HDBSCAN, a distance quantile for the others; 1 for cluster -1)."""
    description: pl.DataFrame
    """polars DataFrame, one row per cluster: cluster, size, top_latents, central_ids, central_texts."""
    distinctive: pl.DataFrame
    """polars DataFrame: cluster, latent, label, freq_in, freq_out, diff (top per cluster)."""
    concepts: Concepts | None
    method: str
    notes: list[str] = field(default_factory=list)
    n_no_concept: int = 0
    """Documents where none of the selected concepts fires (cluster -1)."""
    n_noise: int = 0
    """Documents in no cluster though they carry a concept (cluster -2): HDBSCAN's noise, or, when the fit was
    on a sample (`ClusterConfig.fit_on`), documents that share no concept with any document of the sample."""
    n_unassigned: int = 0
    """Documents in no cluster: n_no_concept + n_noise."""
    share_unassigned: float = 0.0
    """n_unassigned over all documents."""
    config: ClusterConfig | None = None
    fitted: Fitted | None = None
    """What `saeembed.analysis.assign.save_clustering` saves to place new documents."""
    fit_rows: np.ndarray | None = None
    """The store rows of the random sample the clustering was fitted on (`ClusterConfig.fit_on`); None when
    it was fitted on every document with a concept."""

    def summary(self) -> ClusterSummary:
        """The record every renderer reads (`ClusterSummary`)."""
        return ClusterSummary(
            method=self.method, n_axis_latents=len(self.concepts) if self.concepts is not None else None,
            n_docs=len(self.assignments), n_clusters=len(self.description),
            sizes=[int(n) for n in self.description["size"]], n_unassigned=self.n_unassigned,
            n_no_concept=self.n_no_concept, n_noise=self.n_noise, notes=list(self.notes))


@dataclass(frozen=True)
class ClusterSummary(Summary):
    """What `cluster` found, as one record (`saeembed.analysis.summaries`)."""

    method: str
    n_axis_latents: int | None
    """The selected latents the documents were clustered along (None: every latent)."""
    n_docs: int
    n_clusters: int
    sizes: list[int]
    """Documents per cluster, largest first."""
    n_unassigned: int
    n_no_concept: int
    n_noise: int
    notes: list[str]

    @property
    def axis(self) -> str:
        """What the documents were clustered along, in words."""
        return "every latent" if self.n_axis_latents is None else f"{self.n_axis_latents} selected latents"

    def lines(self) -> list[str]:
        return [f"{self.n_docs:,} documents in {count(self.n_clusters, 'cluster')} ({self.method} on {self.axis})",
                unassigned_line(self.n_unassigned, self.n_docs, self.n_no_concept, self.n_noise)]


def cluster(store: Store, concepts: Concepts | None, config: ClusterConfig | None = None, *,
            labels: Labels | None = None) -> ClusterResult:
    """Cluster the store's documents along `concepts` (None: along every latent).

    Examples:
        >>> sel = select_concepts("sports, politics, health", store)  # doctest: +SKIP
        >>> cluster(store, sel, ClusterConfig(k=7)).description  # doctest: +SKIP
    """
    import polars as pl

    from saeembed.labels import labels_for

    config = config or ClusterConfig()
    labels = labels if labels is not None else labels_for(store)
    columns = concepts.latents if concepts is not None else np.arange(store.d_sae)
    binary = present(store.matrix[:, columns].tocsr())
    has_concept = np.flatnonzero(np.diff(binary.indptr) > 0)
    notes = []
    if len(has_concept) < store.n_docs:
        notes.append(f"{store.n_docs - len(has_concept):,} documents have none of the selected concepts: "
                     f"cluster {NO_CONCEPT}")
    k = config.k
    if len(has_concept) < max(k or 3, 3):
        raise SaeEmbedError(f"only {len(has_concept)} documents carry the selected concepts: too few to cluster")
    fit = has_concept
    if config.method != "kmeans" and len(has_concept) > config.fit_on:
        if k is not None and k > config.fit_on:
            raise SaeEmbedError(f"--clusters {k} is more than the {config.fit_on:,} documents the clustering is "
                                f"fitted on (--fit-on): raise --fit-on or ask for fewer clusters")
        fit = np.sort(np.random.default_rng(config.seed).choice(has_concept, config.fit_on, replace=False))
        notes.append(f"{config.method} fitted on a random sample of {len(fit):,} of the {len(has_concept):,} "
                     f"documents with a concept (seed {config.seed}, --fit-on); the other "
                     f"{len(has_concept) - len(fit):,} placed in its clusters as `saeembed assign` places new "
                     f"documents" + (f"; --min-cluster-size {config.min_cluster_size} applies to the sample"
                                     if config.method == "hdbscan" else ""))
    rows = binary[fit]
    values = positive_values(store.matrix[fit][:, columns])
    fitted = Fitted(np.asarray(columns, np.int64), np.zeros(0, np.int32), values, level_unit(values))
    if config.method == "spectral":
        graded = level_rows(values, fitted.unit) if config.similarity == "weighted" else rows
        affinity, affinity_note = _affinity(graded, config)
        notes += [affinity_note] if affinity_note else []
        if k is None:
            k, note = _eigengap_k(affinity)
            notes.append(note)
        found = _spectral(affinity, k, config)
        fitted.labels, clusters = found, np.unique(found)
        similarity = cluster_similarity(graded, graded, found, clusters, skip_self=True)
        total = similarity.sum(axis=1, keepdims=True)
        soft = np.divide(similarity, total, out=np.zeros_like(similarity), where=total > 0)
        distance = 1.0 - similarity[np.arange(len(found)), np.searchsorted(clusters, found)]
        fitted.reference = np.sort(distance)
        outlier = distance_quantile(distance, fitted.reference)
        membership = membership_of(soft, found, clusters)
    elif config.method == "kmeans":
        if k is None:
            k, note = _sample_eigengap_k(rows, config)
            notes.append(note)
        found, fitted.centroids = _kmeans(rows, k, config.seed)
        fitted.labels = found
        _, soft, distance = kmeans_scores(rows, fitted.centroids)
        fitted.reference = np.sort(distance)
        membership, outlier = soft[np.arange(len(found)), found], distance_quantile(distance, fitted.reference)
    else:
        found, membership, outlier = _hdbscan(config, fitted)
    assignment = np.full(store.n_docs, NO_CONCEPT, np.int32)
    strength, outlier_score = np.zeros(store.n_docs), np.ones(store.n_docs)
    assignment[fit], strength[fit], outlier_score[fit] = found, membership, outlier
    rest = np.setdiff1d(has_concept, fit, assume_unique=True)
    if len(rest) and (found != NOISE).any():
        placed = place(fitted, config.method, config, positive_values(store.matrix[rest][:, columns]),
                       np.unique(found[found != NOISE]), with_soft=False)
        assignment[rest], strength[rest], outlier_score[rest] = placed[0], placed[1], placed[3]
    elif len(rest):  # HDBSCAN found no cluster in the sample: nothing to place the others in
        assignment[rest], strength[rest], outlier_score[rest] = NOISE, 0.0, 1.0
    n_noise = int((assignment == NOISE).sum())
    if n_noise:
        notes.append(f"{config.method} left {n_noise:,} of {len(has_concept):,} documents unassigned: cluster "
                     f"{NOISE} ("
                     + ("lower --min-cluster-size, or choose a number of clusters with spectral or kmeans)"
                        if config.method == "hdbscan" else "they share no concept with any fitted document)"))
    description, distinctive = _describe(store, assignment, binary, labels, config)
    assignments = pl.DataFrame({"id": store.frame["id"], "cluster": assignment, "membership": strength,
                                "outlier_score": outlier_score})
    n_no_concept = store.n_docs - len(has_concept)
    return ClusterResult(assignments, description, distinctive, concepts, config.method, notes,
                         n_no_concept=n_no_concept, n_noise=n_noise, n_unassigned=n_no_concept + n_noise,
                         share_unassigned=(n_no_concept + n_noise) / max(store.n_docs, 1), config=config,
                         fitted=fitted, fit_rows=fit if len(fit) < len(has_concept) else None)


def unassigned_line(n_unassigned: int, n_docs: int, n_no_concept: int, n_noise: int) -> str:
    """The count and share of documents in no cluster, and why, in words (the CLI prints it always)."""
    why = [f"{n_no_concept:,} with none of the selected concepts (cluster {NO_CONCEPT})"] if n_no_concept else []
    why += [f"{n_noise:,} left as noise (cluster {NOISE})"] if n_noise else []
    return (f"unassigned: {n_unassigned:,} of {n_docs:,} documents ({n_unassigned / max(n_docs, 1):.1%})"
            + (f": {', '.join(why)}" if why else ""))


def positive_values(values: Any) -> Any:
    """CSR of the activations with negative or zero entries dropped (the definition of `present`)."""
    values = values.tocsr().astype(np.float32)
    values.data = np.maximum(values.data, 0)
    values.eliminate_zeros()
    values.sort_indices()
    return values


def level_unit(values: Any) -> float:
    """The weighted Jaccard's unit: the 90th percentile of the (positive) activations."""
    return max(float(np.quantile(values.data, 0.9)), 1e-12) if values.nnz else 1.0


def distance_quantile(distance: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The outlier score of the spectral and k-means clusterings: the share of the clustered documents
    whose distance (`reference`, ascending) is below `distance`, in [0, 1]."""
    if not len(reference):
        return np.ones(len(distance))
    return np.searchsorted(reference, distance, side="left") / len(reference)


def membership_of(soft: np.ndarray, found: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each document's soft membership in the cluster it was given (0 for noise)."""
    column = np.searchsorted(clusters, found)
    ok = (column < len(clusters)) & (clusters[np.minimum(column, len(clusters) - 1)] == found)
    out = np.zeros(len(found))
    out[ok] = soft[np.flatnonzero(ok), column[ok]]
    return out


# Weighted Jaccard as the binary Jaccard of expanded rows: an activation a (in units of the 90th
# percentile of all the selected activations, capped at LEVEL_CAP) becomes ceil(a / step) ones in
# LEVELS slots of its latent, so the overlap of two rows counts sum(min) and their sizes sum(a), in
# steps of LEVEL_CAP / LEVELS. One scale for every latent, not one each: decoder rows have unit norm, so
# activations already say how much of each concept a document holds, and scaling each latent to its own
# 90th percentile lifted weak, specific latents to the level of broad ones (harness, agnews topic ARI
# 0.43 per latent vs 0.55 one scale; tweet sentiment 0.45 vs 0.43).
LEVELS, LEVEL_CAP = 16, 2.0


def _levels(store: Store, columns: np.ndarray, rows: np.ndarray) -> Any:
    """[len(rows), len(columns) * LEVELS] binary CSR whose Jaccard is the weighted Jaccard of the rows'
    activations (on the level grid)."""
    values = positive_values(store.matrix[rows][:, columns])
    return level_rows(values, level_unit(values))


def level_rows(values: Any, unit: float) -> Any:
    """The expanded binary rows of `values` (CSR of positive activations) on the level grid of `unit`:
    a new document is expanded with the unit of the documents it is compared with."""
    import scipy.sparse as sp

    columns = values.shape[1]
    scaled = np.clip(values.data / max(unit, 1e-12), 0, LEVEL_CAP)
    steps = np.maximum(np.ceil(scaled / (LEVEL_CAP / LEVELS)).astype(np.int64), 1)
    entry_row = np.repeat(np.arange(values.shape[0]), np.diff(values.indptr))
    rows_out = np.repeat(entry_row, steps)
    level = np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)
    cols_out = np.repeat(values.indices.astype(np.int64) * LEVELS, steps) + level
    return sp.csr_matrix((np.ones(len(rows_out), np.float32), (rows_out, cols_out)),
                         shape=(values.shape[0], columns * LEVELS))


def jaccard_blocks(query: Any, train: Any, block: int | None = None, skip_self: bool = False) -> Any:
    """Yield (start, stop, sim): the dense Jaccard similarity of binary rows query[start:stop] to every
    row of `train`, a block of query rows at a time (memory block x len(train), never N x N). With
    `skip_self` (query is train) a row's similarity to itself is -1, so it is never its own neighbour."""
    n, n_train = query.shape[0], train.shape[0]
    block = block or max(1, min(1024, (1 << 24) // max(n_train, 1)))
    size_query = np.asarray(query.sum(axis=1)).ravel()
    size_train = np.asarray(train.sum(axis=1)).ravel()
    transposed = train.T.tocsc()
    for start in range(0, n, block):
        stop = min(start + block, n)
        inter = (query[start:stop] @ transposed).toarray()
        union = size_query[start:stop, None] + size_train[None, :] - inter
        sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        if skip_self:
            sim[np.arange(stop - start), np.arange(start, stop)] = -1.0
        yield start, stop, sim


def nearest(query: Any, train: Any, k: int, skip_self: bool = False, block: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's `k` most Jaccard-similar train rows: (indices [n, k], similarities [n, k])."""
    k = max(1, min(k, train.shape[0] - (1 if skip_self else 0)))
    indices, sims = np.zeros((query.shape[0], k), np.int64), np.zeros((query.shape[0], k))
    for start, stop, sim in jaccard_blocks(query, train, block, skip_self):
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else np.argsort(-sim, axis=1)[:, :k]
        indices[start:stop], sims[start:stop] = top, np.maximum(np.take_along_axis(sim, top, axis=1), 0)
    return indices, sims


def _graph(indices: np.ndarray, sims: np.ndarray, n: int) -> Any:
    import scipy.sparse as sp

    graph = sp.csr_matrix((sims.ravel(), (np.repeat(np.arange(n), indices.shape[1]), indices.ravel())), shape=(n, n))
    graph.eliminate_zeros()
    return graph.maximum(graph.T).tocsr()


def jaccard_knn(rows: Any, neighbors: int, block: int = 1024) -> Any:
    """Sparse symmetric Jaccard affinity keeping each row's `neighbors` most similar rows, computed
    one block of rows at a time (memory block x N, never N x N)."""
    return _graph(*nearest(rows, rows, neighbors, skip_self=True, block=block), rows.shape[0])


def cluster_similarity(query: Any, train: Any, train_labels: np.ndarray, clusters: np.ndarray,
                       skip_self: bool = False) -> np.ndarray:
    """[len(query), len(clusters)]: each query row's mean Jaccard similarity to the train rows of each
    cluster, a block at a time (with `skip_self`, query is train and a row is not compared with itself)."""
    import scipy.sparse as sp

    column = np.searchsorted(clusters, train_labels)
    members = sp.csr_matrix((np.ones(len(column)), (np.arange(len(column)), column)),
                            shape=(len(column), len(clusters)))
    sums = np.zeros((query.shape[0], len(clusters)))
    for start, stop, sim in jaccard_blocks(query, train, skip_self=skip_self):
        if skip_self:
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sums[start:stop] = np.asarray((members.T @ sim.T).T)
    counts = np.tile(np.bincount(column, minlength=len(clusters)).astype(np.float64), (query.shape[0], 1))
    if skip_self:
        counts[np.arange(query.shape[0]), column] -= 1
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def average_linkage(similarity: np.ndarray, clusters: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Place documents by their mean similarity to each cluster's documents (`cluster_similarity`):
    (cluster: the most similar on average; membership: its share of the document's mean similarities;
    soft: every cluster's share [n, len(clusters)]; distance: 1 - the mean similarity to that cluster).
    A document similar to no clustered document is NOISE with membership 0 and distance 1."""
    total = similarity.sum(axis=1)
    soft = np.divide(similarity, total[:, None], out=np.zeros_like(similarity), where=total[:, None] > 0)
    best = np.argmax(similarity, axis=1)
    found = np.where(total > 0, clusters[best], NOISE).astype(np.int32)
    return found, soft.max(axis=1, initial=0.0), soft, 1.0 - similarity[np.arange(len(best)), best]


def kmeans_scores(rows: Any, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means placement of binary rows: (nearest centroid, fuzzy memberships [n, k] (1 / d^2, normalised:
    fuzzy c-means with m = 2 and the centroids fixed), distance to the nearest centroid)."""
    from sklearn.preprocessing import normalize

    x = normalize(rows)
    d2 = (np.asarray(x.multiply(x).sum(axis=1)).ravel()[:, None] + (centroids ** 2).sum(axis=1)[None, :]
          - 2 * np.asarray(x @ centroids.T))
    d2 = np.maximum(d2, 0.0)
    found = np.argmin(d2, axis=1).astype(np.int32)
    inverse = 1.0 / np.maximum(d2, 1e-12)
    return found, inverse / inverse.sum(axis=1, keepdims=True), np.sqrt(d2[np.arange(len(found)), found])


# Without a number of clusters, it is chosen among 2..MAX_AUTO_K by the eigengap of the affinity (for
# k-means, of a sample of EIGENGAP_SAMPLE documents): a concept axis a person picks rarely splits further.
MAX_AUTO_K = 12
EIGENGAP_SAMPLE = 2000


def _affinity(rows: Any, config: ClusterConfig) -> tuple[Any, str | None]:
    """The spectral affinity: weighted (or binary) Jaccard of every pair, or of each document's nearest
    neighbours beyond `dense_limit` documents."""
    n = rows.shape[0]
    if n <= config.dense_limit:
        inter = (rows @ rows.T).toarray()
        size = np.diag(inter).copy()
        union = size[:, None] + size[None, :] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), None
    return jaccard_knn(rows, config.neighbors), (
        f"{n:,} documents > {config.dense_limit:,}: spectral clustering on a sparse {config.neighbors}-nearest-"
        f"neighbour Jaccard graph instead of the full {n:,} x {n:,} matrix")


def _eigengap_k(affinity: Any) -> tuple[int, str]:
    """The number of clusters with the largest gap between consecutive eigenvalues of the normalised
    affinity D^-1/2 A D^-1/2 (von Luxburg 2007), among 2..MAX_AUTO_K."""
    from scipy.sparse import csr_matrix, diags
    from scipy.sparse.linalg import eigsh

    matrix = csr_matrix(affinity)
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    scale = diags(np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0))
    normalised = scale @ matrix @ scale
    n = normalised.shape[0]
    wanted = min(MAX_AUTO_K + 1, n - 1)
    if n <= 2000:
        values = np.linalg.eigvalsh(normalised.toarray())[::-1][:wanted]
    else:
        values = np.sort(eigsh(normalised, k=wanted, which="LA", return_eigenvectors=False, tol=1e-6,
                               v0=np.ones(n) / np.sqrt(n)))[::-1]
    gaps = values[1:-1] - values[2:]  # gap after the k-th eigenvalue, for k = 2 ..
    k = int(np.argmax(gaps)) + 2 if len(gaps) else 2
    return k, f"{k} clusters chosen by the eigengap of the affinity (--clusters N to choose)"


def _sample_eigengap_k(rows: Any, config: ClusterConfig) -> tuple[int, str]:
    """k-means without a number of clusters: the eigengap of the Jaccard affinity of a seeded sample (the
    silhouette, tried first, kept rising with k on binary rows: identical rows make tight clusters)."""
    rng = np.random.default_rng(config.seed)
    n = rows.shape[0]
    sample = rows if n <= EIGENGAP_SAMPLE else rows[np.sort(rng.choice(n, EIGENGAP_SAMPLE, replace=False))]
    k, _ = _eigengap_k(_affinity(sample, config)[0])
    return k, f"{k} clusters chosen by the eigengap of the Jaccard affinity (--clusters N to choose)"


def _spectral(affinity: Any, k: int, config: ClusterConfig) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr",
                               random_state=config.seed)
    return model.fit_predict(affinity).astype(np.int32)


def _kmeans(rows: Any, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(normalize(rows))
    return model.labels_.astype(np.int32), model.cluster_centers_.astype(np.float64)


SVD_DIMENSIONS = 50


def hdbscan_model(config: ClusterConfig, prediction_data: bool = False) -> Any:
    """The HDBSCAN every clustering and every saved clustering's refit uses (one core: deterministic)."""
    import hdbscan

    return hdbscan.HDBSCAN(min_cluster_size=config.min_cluster_size, core_dist_n_jobs=1,
                           prediction_data=prediction_data)


def hdbscan_features(values: Any, unit: float, similarity: str) -> Any:
    """What HDBSCAN clusters, before normalising: with weighted similarity the activations in units of
    `unit` (capped at LEVEL_CAP, as the weighted Jaccard's level grid), else which latents fire (0/1).
    Binary rows on a few latents repeat exactly (agnews, 111 topic latents: 1 duplicate in 1,000; a
    planted store on 15 latents: 398 of 600), and a pile of identical documents gives HDBSCAN infinite
    density: its membership probabilities become 0 or 1 and GLOSH 0 / 0. The activations rarely repeat,
    and cluster news topics better (agnews, 1,000 documents, min_cluster_size 10: ARI 0.27 with 47% noise
    vs 0.07 with 74% for the binary rows)."""
    if similarity != "weighted":
        return present(values)
    scaled = values.astype(np.float64)
    scaled.data = np.clip(scaled.data / max(unit, 1e-12), 0, LEVEL_CAP)
    return scaled


def hdbscan_coords(features: Any, components: np.ndarray | None) -> np.ndarray:
    """Rows as HDBSCAN sees them: L2-normalised, projected on the SVD's components (if any)."""
    from sklearn.preprocessing import normalize

    x = normalize(features.astype(np.float64))
    return np.asarray(x @ components.T) if components is not None else x.toarray()


def unit_interval(values: Any, nan: float) -> np.ndarray:
    """Scores from hdbscan in [0, 1]: NaN (duplicated points give 0 / 0) becomes `nan`."""
    return np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=nan, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _hdbscan(config: ClusterConfig, fitted: Fitted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HDBSCAN labels (NOISE for noise), membership probabilities and GLOSH outlier scores; the SVD,
    the coordinates and the model go into `fitted`."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    features = hdbscan_features(fitted.values, fitted.unit, config.similarity)
    if features.shape[1] > SVD_DIMENSIONS:
        svd = TruncatedSVD(n_components=SVD_DIMENSIONS, random_state=config.seed).fit(normalize(features))
        fitted.components = svd.components_.astype(np.float64)
    fitted.coords = hdbscan_coords(features, fitted.components)
    model = hdbscan_model(config).fit(fitted.coords)
    found = np.where(model.labels_ < 0, NOISE, model.labels_).astype(np.int32)
    fitted.labels, fitted.model = found, model
    return found, np.where(found == NOISE, 0.0, unit_interval(model.probabilities_, 1.0)), \
        unit_interval(model.outlier_scores_, 0.0)


def place(fitted: Fitted, method: str, config: ClusterConfig, rows: csr_matrix, clusters: np.ndarray,
          with_soft: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cluster, membership, soft [n, clusters], outlier score) of documents' positive activations on
    `fitted.latents`, placed in a fitted clustering: spectral by average linkage, k-means by the nearest
    centroid, HDBSCAN by its approximate prediction (`saeembed.analysis.assign` says why each). Without
    `with_soft`, HDBSCAN's soft memberships (a loop over the documents) are not computed: zeros [n, 0]."""
    if method == "spectral":
        if config.similarity == "weighted":
            query, train = level_rows(rows, fitted.unit), level_rows(fitted.values, fitted.unit)
        else:
            query, train = present(rows), present(fitted.values)
        found, membership, soft, distance = average_linkage(
            cluster_similarity(query, train, fitted.labels, clusters), clusters)
        assert fitted.reference is not None  # cluster() and the loader set it for spectral
        return found, membership, soft, distance_quantile(distance, fitted.reference)
    if method == "kmeans":
        assert fitted.centroids is not None and fitted.reference is not None  # set for kmeans (cluster, loader)
        nearest_centroid, soft, distance = kmeans_scores(present(rows), fitted.centroids)
        found = clusters[nearest_centroid].astype(np.int32)
        membership = soft[np.arange(len(found)), nearest_centroid]
        return found, membership, soft, distance_quantile(distance, fitted.reference)
    import warnings

    import hdbscan

    if getattr(fitted.model, "prediction_data_", None) is None:
        fitted.model.generate_prediction_data()
    coords = hdbscan_coords(hdbscan_features(rows, fitted.unit, config.similarity), fitted.components)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # 0 / 0 on exact duplicates: made 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        labels, strengths = hdbscan.approximate_predict(fitted.model, coords)
        memberships = (np.asarray(hdbscan.membership_vector(fitted.model, coords)).reshape(len(coords), -1)
                       if with_soft else np.zeros((len(coords), 0)))
        outlier = hdbscan.approximate_predict_scores(fitted.model, coords)
    found = np.where(np.asarray(labels) < 0, NOISE, labels).astype(np.int32)
    membership = np.where(found == NOISE, 0.0, unit_interval(strengths, 1.0))
    return found, membership, unit_interval(memberships, 0.0), unit_interval(outlier, 0.0)


def _describe(store: Store, assignment: np.ndarray, binary: Any, labels: Labels,
              config: ClusterConfig) -> tuple[Any, Any]:
    import polars as pl
    from sklearn.preprocessing import normalize

    everything = store.matrix
    counts_all = document_frequency(everything)
    clusters = sorted(set(assignment.tolist()) - {NO_CONCEPT, NOISE})
    rows_out, distinctive = [], []
    texts, ids = store.frame["text"], store.frame["id"]
    for c in clusters:
        members = np.flatnonzero(assignment == c)
        inside = store.matrix[members]
        count_in = document_frequency(inside)
        freq_in = count_in / len(members)
        freq_out = (counts_all - count_in) / max(store.n_docs - len(members), 1)
        best = np.argsort(-(freq_in - freq_out))[: config.top_latents]
        for latent in best:
            distinctive.append({"cluster": c, "latent": int(latent), "label": labels.get(int(latent)),
                                "freq_in": float(freq_in[latent]), "freq_out": float(freq_out[latent]),
                                "diff": float(freq_in[latent] - freq_out[latent])})
        features = normalize(binary[members])
        centre = np.asarray(features.mean(axis=0)).ravel()
        central = members[np.argsort(-(features @ centre))[: config.central_docs]]
        rows_out.append({"cluster": c, "size": len(members),
                         "top_latents": " | ".join(f"{int(i)} {labels.get(int(i)) or ''}".strip() for i in best[:5]),
                         "central_ids": [str(ids[int(r)]) for r in central],
                         "central_texts": [texts[int(r)] for r in central]})
    description = pl.DataFrame(rows_out, schema={"cluster": pl.Int32, "size": pl.Int64, "top_latents": pl.Utf8,
                                                 "central_ids": pl.List(pl.Utf8), "central_texts": pl.List(pl.Utf8)})
    distinct = pl.DataFrame(distinctive, schema={"cluster": pl.Int32, "latent": pl.Int32, "label": pl.Utf8,
                                                 "freq_in": pl.Float64, "freq_out": pl.Float64, "diff": pl.Float64})
    return description.sort("size", descending=True), distinct
