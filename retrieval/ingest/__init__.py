"""Catalog ingest from JSONL or CSV files at scale: streamed, mapped, validated, resumable.

Where things are: `source` (the file, its format, mapping and defaults), `records` (a line to an
item or a rejection), `run` (`ingest_file`: batches, checkpoints and the report).
"""
