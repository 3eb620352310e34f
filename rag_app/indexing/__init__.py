"""The bridge from SQL entities to the ``indexes`` layer: specs, and the per-process cache of
open knowledge-base indexes."""
