"""Background jobs: document ingestion, run in process (embedded default) or by `rag-app worker`
processes fed by a Redis-backed SAQ queue (production)."""
