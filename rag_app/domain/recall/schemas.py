from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from rag_app.api.params import Id
from rag_app.db.models import RecallTest
from rag_app.domain.common import InputSchema, ReadSchema

MAX_QUERIES = 1000
MAX_EXPECTED = 100
RecallMode = Literal["vector", "keyword", "hybrid"]


def _no_duplicates(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("an id is listed more than once")
    return ids


class RecallQuery(InputSchema):
    query: str = Field(min_length=1, max_length=2000)
    expected_document_ids: Annotated[
        list[Id],
        Field(
            min_length=1,
            max_length=MAX_EXPECTED,
            description="Documents (of the searched knowledge bases) that answer the query",
        ),
        AfterValidator(_no_duplicates),
    ]


class RecallTestCreate(InputSchema):
    """Exactly one of ``knowledge_ids`` and ``robot_id``."""

    knowledge_ids: (
        Annotated[
            list[Id],
            Field(min_length=1, max_length=50, description="Knowledge bases to search (yours)"),
            AfterValidator(_no_duplicates),
        ]
        | None
    ) = None
    robot_id: Id | None = Field(
        default=None, description="Search as this robot does (yours): its bases, fusion, rerank"
    )
    queries: list[RecallQuery] = Field(min_length=1, max_length=MAX_QUERIES)
    top_k: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Chunks retrieved per query, as a robot would put in its prompt; the "
        "metrics' k. A document ranks where its best chunk does.",
    )
    mode: RecallMode | None = Field(
        default=None, description="Default: the robot's mode (hybrid for knowledge bases)"
    )


class RecallHit(ReadSchema):
    document_id: int
    rank: int | None = Field(description="1-based rank among the retrieved documents; null: missed")


class RecallQueryResult(ReadSchema):
    query: str
    expected_document_ids: list[int]
    retrieved_document_ids: list[int] = Field(description="Distinct documents, best first")
    hits: list[RecallHit]
    recall: float
    reciprocal_rank: float
    ndcg: float
    latency_ms: float


class RecallMetrics(ReadSchema):
    k: int
    recall_at_k: float = Field(description="Mean share of the expected documents in the top k")
    mrr: float = Field(description="Mean reciprocal rank of the first expected document")
    ndcg_at_k: float = Field(description="Mean nDCG@k, binary relevance")
    queries: int
    mean_latency_ms: float
    library: str = Field(description="What computed the metrics")


class RecallProgress(ReadSchema):
    done: int
    total: int


class RecallTestSummary(ReadSchema):
    id: int
    user_id: int
    robot_id: int | None
    knowledge_ids: list[int]
    top_k: int
    mode: str
    status: str
    progress: RecallProgress
    metrics: RecallMetrics | None
    error_msg: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def values_of(cls, test: RecallTest) -> dict[str, Any]:
        values = test.model_dump(exclude={"queries", "results", "progress"})
        values["progress"] = RecallProgress(done=test.progress, total=test.total_queries)
        return values

    @classmethod
    def of(cls, test: RecallTest) -> RecallTestSummary:
        return cls.model_validate(cls.values_of(test))


class RecallTestRead(RecallTestSummary):
    results: list[RecallQueryResult] = Field(
        description="One per query, in the order given; empty until the test completes"
    )

    @classmethod
    def of(cls, test: RecallTest) -> RecallTestRead:
        return cls.model_validate({**cls.values_of(test), "results": test.results or []})
