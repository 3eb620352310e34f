from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from rag_app.api.params import Id
from rag_app.domain.common import InputSchema, Name, ReadSchema, Status

RetrievalMode = Literal["vector", "keyword", "hybrid"]
Fusion = Literal["rrf", "weighted"]
Weight = Annotated[float, Field(ge=0, le=1)]
RrfK = Annotated[int, Field(ge=1, le=1000, description="The k in 1 / (k + rank)")]
CandidateK = Annotated[
    int,
    Field(ge=1, le=200, description="Candidates each leg retrieves before fusion and rerank"),
]


class RetrievalConfig(InputSchema):
    """How a robot retrieves; stored as JSON in rag_robot.retrieval_config."""

    mode: RetrievalMode = "hybrid"
    fusion: Fusion = "rrf"
    vector_weight: Weight = 0.5
    keyword_weight: Weight = 0.5
    rrf_k: RrfK = 60
    # Checked against the robot's top_k by the service: it is not known here.
    candidate_k: CandidateK = Field(default=20, description="At least the robot's top_k")

    @model_validator(mode="after")
    def _weights_not_both_zero(self) -> RetrievalConfig:
        if self.fusion == "weighted" and self.vector_weight == 0 and self.keyword_weight == 0:
            raise ValueError("weighted fusion needs vector_weight or keyword_weight above 0")
        return self


class RetrievalUpdate(InputSchema):
    """A partial RetrievalConfig: the fields sent replace the stored ones."""

    mode: RetrievalMode | None = None
    fusion: Fusion | None = None
    vector_weight: Weight | None = None
    keyword_weight: Weight | None = None
    rrf_k: RrfK | None = None
    candidate_k: CandidateK | None = None


def _no_duplicates(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("a knowledge base is listed more than once")
    return ids


KnowledgeIds = Annotated[
    list[Id],
    Field(max_length=50, description="Knowledge bases to answer from (yours)"),
    AfterValidator(_no_duplicates),
]
Question = Annotated[str, StringConstraints(min_length=1, max_length=200)]
SuggestedQuestions = Annotated[list[Question], Field(max_length=10)]
SystemPrompt = Annotated[str, StringConstraints(max_length=10000)]
Threshold = Annotated[float, Field(ge=0, le=1, description="Drop passages scoring below this")]
TopK = Annotated[int, Field(ge=1, le=50, description="Passages given to the model")]
Temperature = Annotated[float, Field(ge=0, le=2)]
MaxTokens = Annotated[int, Field(ge=1, le=32768, description="Answer length limit")]


class RobotCreate(InputSchema):
    name: Name
    description: str | None = Field(default=None, max_length=500)
    avatar: str | None = Field(default=None, max_length=255)
    chat_llm_id: Id | None = Field(
        default=None, description="An enabled chat model; none: retrieval-only answers"
    )
    rerank_llm_id: Id | None = Field(default=None, description="An enabled rerank model")
    enable_rerank: bool = Field(default=False, description="Needs rerank_llm_id")
    knowledge_ids: KnowledgeIds = Field(default_factory=list)
    system_prompt: SystemPrompt | None = None
    welcome_msg: str | None = Field(default=None, max_length=500)
    suggested_questions: SuggestedQuestions = Field(default_factory=list)
    similarity_threshold: Threshold = 0.0
    top_k: TopK = 5
    temperature: Temperature = 0.7
    max_tokens: MaxTokens = 2000
    is_public: bool = Field(
        default=False, description="Every signed-in user may chat with it; only you change it"
    )
    status: Status = Field(default=1, description="1 enabled, 0 disabled")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)


class RobotUpdate(InputSchema):
    """Only the fields sent change; the result is checked as a whole. knowledge_ids replaces the
    bound set; retrieval changes only the keys it names."""

    name: Name | None = None
    description: str | None = Field(default=None, max_length=500)
    avatar: str | None = Field(default=None, max_length=255)
    chat_llm_id: Id | None = None
    rerank_llm_id: Id | None = None
    enable_rerank: bool | None = None
    knowledge_ids: KnowledgeIds | None = None
    system_prompt: SystemPrompt | None = None
    welcome_msg: str | None = Field(default=None, max_length=500)
    suggested_questions: SuggestedQuestions | None = None
    similarity_threshold: Threshold | None = None
    top_k: TopK | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    is_public: bool | None = None
    status: Status | None = None
    retrieval: RetrievalUpdate | None = None


class RobotRead(ReadSchema):
    id: int
    user_id: int
    name: str
    description: str | None
    avatar: str | None
    chat_llm_id: int | None
    rerank_llm_id: int | None
    enable_rerank: bool
    knowledge_ids: list[int] = Field(description="Bound knowledge bases, sorted")
    system_prompt: str | None
    welcome_msg: str | None
    suggested_questions: list[str]
    similarity_threshold: float
    top_k: int
    temperature: float
    max_tokens: int
    is_public: bool
    status: int
    retrieval: RetrievalConfig
    created_at: datetime
    updated_at: datetime
