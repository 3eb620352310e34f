"""Batch recall tests (DESIGN §5): expected documents per query, scored with ranx."""
