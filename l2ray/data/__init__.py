"""Seeds: the recipe section, JSONL/Parquet/HF loaders, the bundled seed and mini-eval sets."""
