"""The label store of an SAE: one Parquet file per SAE, keyed by its content fingerprint, which every
store records, so analyses of any store embedded with that SAE find its labels:
`ROOT/labels/<fingerprint>.parquet` under the cache root (labels shipped beside an SAE's files too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saeembed.cache_root import default_cache_root
from saeembed.errors import LabelError, first_line
from saeembed.store import Store, atomic_write_table
from saeembed.stream import StoreStream


@dataclass
class Labels:
    """latent id -> label, with where it came from and a score (None when not scored)."""

    d_sae: int
    label: dict[int, str]
    source: dict[int, str]
    score: dict[int, float | None]

    def get(self, latent: int) -> str | None:
        return self.label.get(int(latent))

    def unlabelled(self) -> list[int]:
        return [i for i in range(self.d_sae) if i not in self.label]

    def update(self, other: "Labels") -> None:
        self.label.update(other.label)
        self.source.update(other.source)
        self.score.update(other.score)

    def save(self, path: Path) -> None:
        import pyarrow as pa

        latents = sorted(self.label)
        table = pa.table({"latent": pa.array(latents, pa.int32()),
                          "label": [self.label[i] for i in latents],
                          "source": [self.source.get(i, "") for i in latents],
                          "score": pa.array([self.score.get(i) for i in latents], pa.float32())})
        table = table.replace_schema_metadata({b"d_sae": str(self.d_sae).encode()})
        atomic_write_table(table, path)

    @staticmethod
    def load(path: Path) -> "Labels":
        """A saved label store; a LabelError naming the file when it is damaged or not one."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        again = "delete it and import or generate the labels again"
        try:
            table = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise LabelError(f"{path}: not a readable label store ({first_line(exc, 120)}); {again}") from None
        kinds = {"latent": pa.types.is_integer, "label": pa.types.is_string, "source": pa.types.is_string,
                 "score": pa.types.is_floating}
        for name, is_kind in kinds.items():
            if name not in table.column_names or not (is_kind(table.schema.field(name).type)
                                                      or pa.types.is_null(table.schema.field(name).type)):
                raise LabelError(f"{path}: not a label store (no {name} column of the right type); {again}")
        raw_d_sae = (table.schema.metadata or {}).get(b"d_sae", b"0")
        if not raw_d_sae.isdigit():
            raise LabelError(f"{path}: its d_sae metadata {raw_d_sae[:20]!r} is not a number; {again}")
        rows = [r for r in table.select(list(kinds)).to_pylist() if r["latent"] is not None and r["label"]]
        return Labels(int(raw_d_sae), {r["latent"]: r["label"] for r in rows},
                      {r["latent"]: r["source"] or "" for r in rows}, {r["latent"]: r["score"] for r in rows})


def labels_path(sae_fingerprint: str, root: Path | None = None) -> Path:
    return (root or default_cache_root()) / "labels" / f"{sae_fingerprint}.parquet"


def save_labels(new: Labels, sae_fingerprint: str, root: Path | None = None) -> Path:
    """Merge `new` into the SAE's label store (new labels win) and save it; returns its path."""
    path = labels_path(sae_fingerprint, root)
    labels = Labels.load(path) if path.exists() else Labels(new.d_sae, {}, {}, {})
    labels.update(new)
    labels.save(path)
    return path


def labels_for(store: Store | StoreStream, root: Path | None = None) -> Labels:
    """The labels for the store's SAE: those shipped beside its files (`labels.parquet`, as the
    bundled default SAE has), overridden by the user's own imported or generated ones."""
    labels = Labels(store.d_sae, {}, {}, {})
    candidates = [labels_path(store.meta["sae"]["fingerprint"], root)]
    source = Path(store.meta["sae"].get("source") or "")
    if store.meta["sae"].get("source") and source.exists():  # a local SAE (hub ids are not paths here)
        candidates.insert(0, (source if source.is_dir() else source.parent) / "labels.parquet")
    for path in candidates:
        if path.exists():
            labels.update(Labels.load(path))
    return labels


