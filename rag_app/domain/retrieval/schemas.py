from __future__ import annotations

from typing import Literal

from pydantic import Field

from indexes.retrieval import RetrievalResult, RetrievedChunk
from rag_app.domain.common import InputSchema, ReadSchema


class RetrievalTestRequest(InputSchema):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int | None = Field(default=None, ge=1, le=100, description="Default: the robot's")
    mode: Literal["vector", "keyword", "hybrid"] | None = Field(
        default=None, description="Default: the robot's (hybrid for a knowledge base)"
    )


class RetrievedChunkRead(ReadSchema):
    node_id: str
    text: str
    knowledge_id: int
    document_id: int | None
    file_name: str | None
    page: int | None
    heading_path: str | None
    vector_rank: int | None
    vector_score: float | None
    keyword_rank: int | None
    keyword_score: float | None
    similarity: float | None
    fused_score: float | None
    rerank_score: float | None
    score: float

    @classmethod
    def of(cls, chunk: RetrievedChunk) -> RetrievedChunkRead:
        return cls.model_validate(chunk, from_attributes=True)


class RetrievalTestRead(ReadSchema):
    items: list[RetrievedChunkRead]
    mode: str
    threshold_on: str | None = Field(description="Which score the threshold applied to, if any")
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, result: RetrievalResult) -> RetrievalTestRead:
        return cls(
            items=[RetrievedChunkRead.of(chunk) for chunk in result.chunks],
            mode=result.mode,
            threshold_on=result.threshold_on,
            timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()},
        )
