"""Features of items and users computed from metadata (text embeddings, ...)."""
