"""A saved clustering of real news places new documents as clustering them afresh would (slow): agnews,
the offline default, the first 1,000 items clustered along topic concepts and saved, the next 1,000
assigned, and the same 1,000 clustered by refit along the same concepts. Measured (ARI, assigned vs
refit): spectral 0.84 (0.80..0.85 over four splits), k-means 0.78, HDBSCAN 0.68 (1.00 among the
documents both leave out of noise)."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from saeembed.analysis.assign import assign, save_clustering
from saeembed.analysis.cluster import cluster
from saeembed.analysis.concepts import select_concepts
from saeembed.analysis.config import ClusterConfig
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")]

TOPICS = "world politics, sports, business economy, science technology"  # as benchmarks/meaning.py clusters agnews


@pytest.mark.parametrize("config,want", [(ClusterConfig(k=4), 0.8), (ClusterConfig(method="kmeans", k=4), 0.7),
                                         (ClusterConfig(method="hdbscan"), 0.55)],
                         ids=["spectral", "kmeans", "hdbscan"])
def test_assigning_new_news_agrees_with_clustering_it_afresh(real_store, tmp_path, config, want):
    store = real_store("agnews/test.jsonl", head=2000)  # the store the property-search checks embed too
    first, second = store.take(np.arange(1000)), store.take(np.arange(1000, 2000))
    concepts = select_concepts(TOPICS, first)
    folder = save_clustering(cluster(first, concepts, config), first, tmp_path / "news")
    assigned = assign(second, folder).assignments["cluster"].to_numpy()
    refit = cluster(second, concepts, config).assignments["cluster"].to_numpy()
    assert adjusted_rand_score(refit, assigned) >= want
    topic = second.frame["topic"].to_numpy()
    assert adjusted_rand_score(topic, assigned) >= adjusted_rand_score(topic, refit) - 0.1
