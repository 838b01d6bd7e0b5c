"""The "how it is written" layer of a diff: the latents of a per-token SAE on an LLM reader (the offline
default: SmolLM2-135M-Instruct block 15, `saeembed.embedding.presets.STYLE`), compared as rates.

Why rates of token latents: what differs between two models' answers is mostly local (a list marker, an
opening "Sure", a "!", a disclaimer), and a document-level vector dilutes it. A store pooled with
`count` holds, per document and latent, the tokens on which the latent fires; divided by the document's
tokens that is a rate that does not reward length (a document twice as long with twice the lists does
not have "more lists"). Two things keep packaging and length out of the rates: a causal reader's token
latents depend only on the text before them (an encoder's read the whole window), and the style preset
reads in short windows, each after its own BOS, so a latent that tracks the position in the document
fires as often in a long document as in a short one (`saeembed.embedding.presets.STYLE_WINDOW`).

With hundreds of paired answers almost every latent differs by a significant sliver, so a finding also
needs a standardized effect of at least `DiffConfig.style_min_effect` (paired: mean / sd of the per-pair
differences; unpaired: difference / pooled sd). The rest of the machinery is the content layer's:
Benjamini-Hochberg over the layer's latents, holdout replication, themes, examples with the peak token.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from saeembed.analysis.compare import Side, mean_var
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.length_adjust import matrix_sums
from saeembed.errors import SaeEmbedError
from saeembed.store import Store

if TYPE_CHECKING:
    import polars as pl

PER_TOKENS = 1000  # rates are per this many tokens


def rate_side(store: Store, rows: np.ndarray) -> Side:
    """The documents `rows` of a count-pooled store as rates: tokens firing each latent per PER_TOKENS."""
    tokens = np.maximum(store.frame["n_tokens"].to_numpy()[rows], 1).astype(np.float64)
    rates = store.matrix[rows].tocsr().astype(np.float64)
    rates.data *= np.repeat(PER_TOKENS / tokens, np.diff(rates.indptr))
    return Side.of(rates, tokens)


def rates_config(config: DiffConfig) -> DiffConfig:
    """The comparison the style layer runs: means of the rates (paired or Welch t), no length model."""
    return replace(config, measure="mean", length="ignore", holdout=None)


def effect_sizes(sides: Sequence[Side], nearest: np.ndarray, paired: bool) -> np.ndarray:
    """Per latent, the standardized difference between the first corpus and the other `nearest` names:
    paired, mean / sd of the per-pair differences (d_z); else the difference over the pooled sd."""
    target, others = sides[0], sides[1:]
    out = np.zeros(len(target.counts))
    for k, other in enumerate(others):
        if paired:
            mean, var = mean_var(matrix_sums(target.matrix - other.matrix, None), target.n)
        else:
            mean_a, var_a = mean_var(target.sums(), target.n)
            mean_b, var_b = mean_var(other.sums(), other.n)
            mean, var = mean_a - mean_b, (var_a + var_b) / 2
        sd = np.sqrt(var)
        effect = np.divide(np.abs(mean), sd, out=np.zeros(len(mean)), where=sd > 0)
        out = np.where(nearest == k, effect, out)
    return out


def check_style_stores(stores: Sequence[Store], style: Sequence[Store], names: Sequence[str]) -> None:
    """The style stores hold the same documents as the content stores, in the same order, read by a
    per-token SAE pooled with `count`; refused in one line otherwise."""
    if len(style) != len(stores):
        raise SaeEmbedError(f"give one style store per corpus ({len(stores)}), got {len(style)}")
    for name, content, written in zip(names, stores, style):
        meta = written.meta
        if meta.get("pooling") != "count":
            raise SaeEmbedError(f"the style store of {name} is pooled with {meta.get('pooling')!r}; the style layer "
                                f"compares rates of token latents: embed it with pooling='count' (--pool count), "
                                f"e.g. --preset smollm2-style")
        if content.n_docs != written.n_docs or content.frame["id"].to_list() != written.frame["id"].to_list():
            raise SaeEmbedError(f"the style store of {name} does not hold the same documents as its content store "
                                f"(ids differ); embed both from the same corpus file")


def style_table(found: dict[str, np.ndarray], effect: np.ndarray, config: DiffConfig) -> pl.DataFrame:
    """The tested latents as a table with q, effect and whether each is a finding (before labels, themes,
    examples and replication, which the content layer's code adds)."""
    import polars as pl

    from saeembed.analysis import stats

    tested = found.pop("tested")
    table = pl.DataFrame({k: v[tested] for k, v in found.items()}).with_columns(
        pl.Series("latent", np.flatnonzero(tested).astype(np.int32)), pl.Series("effect", effect[tested]))
    table = table.with_columns(q=pl.Series(stats.benjamini_hochberg(table["p"].to_numpy())))
    return table.with_columns(significant=(pl.col("q") <= config.alpha)
                              & (pl.col("effect") >= config.style_min_effect))
