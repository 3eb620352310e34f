"""What one chat turn did (the condensed question, token usage, dropped chunks, timings), carried
on the engine's response: read it with :func:`turn_info` and its shortcuts."""

from __future__ import annotations

from dataclasses import dataclass, field

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.chat_engine.types import AgentChatResponse, StreamingAgentChatResponse

from indexes.llms import Usage


@dataclass
class TurnInfo:
    """One turn of an engine. ``usage`` is the answering call's (zero without a chat model or
    when nothing was retrieved), ``condense_usage`` the condensing call's; for a stream both are
    final once it is consumed. ``dropped_chunks``: retrieved chunks left out to fit the window.
    ``timings``: seconds spent condensing (``"condense"``) and retrieving (``"retrieve"``)."""

    question: str
    chinese: bool
    condensed_question: str | None = None
    usage: Usage = field(default_factory=Usage)
    condense_usage: Usage = field(default_factory=Usage)
    dropped_chunks: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    history: list[ChatMessage] = field(default_factory=list, repr=False)

    def add_usage(self, usage: Usage) -> None:
        self.usage += usage

    def add_condense_usage(self, usage: Usage) -> None:
        self.condense_usage += usage


ChatEngineResponse = AgentChatResponse | StreamingAgentChatResponse


def attach_turn(response: ChatEngineResponse, turn: TurnInfo) -> None:
    """Make ``turn`` what :func:`turn_info` finds on ``response``."""
    # AgentChatResponse has a ``metadata`` dict and StreamingAgentChatResponse none: give both
    # one, so that callers read either the same way.
    metadata = getattr(response, "metadata", None) or {}
    metadata["turn"] = turn
    vars(response)["metadata"] = metadata


def turn_info(response: ChatEngineResponse) -> TurnInfo | None:
    """What the turn that produced ``response`` did (None for engines not built here)."""
    metadata = getattr(response, "metadata", None)
    turn = metadata.get("turn") if isinstance(metadata, dict) else None
    return turn if isinstance(turn, TurnInfo) else None


def response_usage(response: ChatEngineResponse) -> Usage:
    """Token usage of the answering call (see :class:`TurnInfo`)."""
    turn = turn_info(response)
    return turn.usage if turn is not None else Usage()


def condensed_question(response: ChatEngineResponse) -> str | None:
    """The standalone question the engine retrieved with, for logging."""
    turn = turn_info(response)
    return turn.condensed_question if turn is not None else None
