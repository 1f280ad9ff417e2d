"""Data stages: sources, language ID, filters, Parquet shards, instruction formatting, collation."""
