"""From text to stores: the settings (`config`, `presets`), the corpus readers (`corpus`), the reader
model with batching and token activations (`reader`), pooling codes into document vectors (`pool`), the
content-addressed vector cache (`cache`), the orchestration and in-memory API (`pipeline`: `Embedder`),
dense sentence embeddings (`dense`), opening a store or a corpus as a store (`open_store`) and the
reconstruction check of a reader + SAE pair (`check`)."""
