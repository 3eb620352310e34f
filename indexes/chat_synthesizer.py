"""How the answer is written from the passages: LlamaIndex's CompactAndRefine over numbered
passages, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.prompts.prompt_utils import get_biggest_prompt
from llama_index.core.response_synthesizers import CompactAndRefine
from llama_index.core.schema import NodeWithScore, QueryType, TextNode

from indexes.chat_prompts import passage


class CitingSynthesizer(CompactAndRefine):
    """CompactAndRefine over numbered passages, in one call: the engine already cut the context
    to the window, so whatever would still overflow is dropped rather than "refined" in more
    calls (each would cost a full prompt and stream nothing until the last)."""

    def __init__(self, *, empty_response: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Refine does not pass empty_response on to its base: without passages the answer is
        # this sentence, in the question's language, and no call is made.
        self._empty_response = empty_response

    def synthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        numbered = numbered_passages(nodes)
        return super().synthesize(query, numbered, additional_source_nodes, **response_kwargs)

    async def asynthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        numbered = numbered_passages(nodes)
        return await super().asynthesize(
            query, numbered, additional_source_nodes, **response_kwargs
        )

    def _make_compact_text_chunks(self, query_str: str, text_chunks: Sequence[str]) -> list[str]:
        return super()._make_compact_text_chunks(query_str, text_chunks)[:1]

    def context_limit(self, query_str: str) -> int:
        """Tokens left for the context, computed as CompactAndRefine packs it (0: none)."""
        qa = self._text_qa_template.partial_format(query_str=query_str)
        refine = self._refine_template.partial_format(query_str=query_str)
        try:
            splitter = self._prompt_helper.get_text_splitter_given_prompt(
                get_biggest_prompt([qa, refine]),
                padding=self._response_padding_size,
                llm=self._llm,
            )
        except ValueError:  # the prompt alone overflows the window
            return 0
        return splitter.chunk_size


def numbered_passages(nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
    """The nodes as the numbered passages [1], [2]... that the answer cites."""
    # Copies without metadata: the label carries the source, and the originals stay untouched
    # for response.source_nodes.
    return [
        NodeWithScore(node=TextNode(id_=node.node.node_id, text=passage(i, node)), score=node.score)
        for i, node in enumerate(nodes, 1)
    ]


def context_text(nodes: Sequence[NodeWithScore]) -> str:
    """The context that ``nodes`` make, to measure it against the window."""
    # As PromptHelper.repack joins the chunks it packs.
    return "\n\n".join(passage(i, node) for i, node in enumerate(nodes, 1))
