"""Entities → ``indexes`` specs. The only place that knows both shapes."""

from __future__ import annotations

from pydantic import SecretStr

from indexes.specs import KnowledgeSpec, ModelSpec, StoreSettings
from rag_app.db.models import Knowledge, Llm
from rag_app.settings import Settings


def model_spec(llm: Llm, api_key: str | None) -> ModelSpec:
    return ModelSpec(
        provider=llm.provider,
        model_name=llm.model_name,
        model_type=llm.model_type,  # validated by the registry
        base_url=llm.base_url,
        api_key=SecretStr(api_key) if api_key else None,
        api_version=llm.api_version,
        dimension=llm.dimension,
        max_tokens=llm.max_tokens,
    )


def knowledge_spec(knowledge: Knowledge, embedding: ModelSpec) -> KnowledgeSpec:
    return KnowledgeSpec(
        knowledge_id=knowledge.id or 0,
        collection_name=knowledge.vector_collection_name,
        embedding=embedding,
        chunk_size=knowledge.chunk_size,
        chunk_overlap=knowledge.chunk_overlap,
        keyword_backend=knowledge.keyword_backend,
    )


def store_settings(settings: Settings) -> StoreSettings:
    index = settings.index
    return StoreSettings(
        index_dir=settings.index_dir,
        milvus_uri=index.milvus_uri,
        milvus_token=index.milvus_token,
        elasticsearch_url=index.elasticsearch_url,
        elasticsearch_api_key=index.elasticsearch_api_key,
    )
