"""Model provider presets: plain data, shared by the model registry and the model builders.

Every remote provider here is reached through its OpenAI-compatible endpoint, so one client
covers all of them; a preset only says where that endpoint usually is and what it serves.
This module must stay free of LlamaIndex, ``rag_app`` and ``litestar`` imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

CHAT = "chat"
EMBEDDING = "embedding"
RERANK = "rerank"
MODEL_TYPES: tuple[str, ...] = (CHAT, EMBEDDING, RERANK)


@dataclass(frozen=True)
class ProviderPreset:
    name: str
    label: str
    # None: no sensible default (Azure needs the resource URL, generic endpoints need theirs,
    # local models have no URL at all).
    default_base_url: str | None
    model_types: frozenset[str]
    requires_api_key: bool
    requires_api_version: bool = False
    # False only for in-process models, which take a package name or a path as model_name.
    uses_base_url: bool = True
    # Vector sizes of models we can name without asking the model (local packaged models).
    known_dimensions: Mapping[str, int] = field(default_factory=dict)

    @property
    def requires_base_url(self) -> bool:
        return self.uses_base_url and self.default_base_url is None

    def supports(self, model_type: str) -> bool:
        return model_type in self.model_types

    def default_dimension(self, model_name: str) -> int | None:
        return self.known_dimensions.get(model_name)


def _types(*names: str) -> frozenset[str]:
    return frozenset(names)


_ALL = _types(CHAT, EMBEDDING, RERANK)
_CHAT_EMBED = _types(CHAT, EMBEDDING)

_PRESETS: tuple[ProviderPreset, ...] = (
    ProviderPreset("openai", "OpenAI", "https://api.openai.com/v1", _CHAT_EMBED, True),
    ProviderPreset("azure", "Azure OpenAI", None, _CHAT_EMBED, True, requires_api_version=True),
    ProviderPreset("deepseek", "DeepSeek", "https://api.deepseek.com/v1", _types(CHAT), True),
    ProviderPreset(
        "qwen",
        "Qwen (DashScope compatible mode)",
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        _CHAT_EMBED,
        True,
    ),
    ProviderPreset("siliconflow", "SiliconFlow", "https://api.siliconflow.cn/v1", _ALL, True),
    ProviderPreset("moonshot", "Moonshot (Kimi)", "https://api.moonshot.cn/v1", _types(CHAT), True),
    ProviderPreset(
        "zhipu", "Zhipu AI (GLM)", "https://open.bigmodel.cn/api/paas/v4", _CHAT_EMBED, True
    ),
    ProviderPreset("ollama", "Ollama", "http://127.0.0.1:11434/v1", _CHAT_EMBED, False),
    ProviderPreset("vllm", "vLLM", "http://127.0.0.1:8000/v1", _ALL, False),
    ProviderPreset("xinference", "Xinference", "http://127.0.0.1:9997/v1", _ALL, False),
    ProviderPreset("llamacpp", "llama.cpp server", "http://127.0.0.1:8080/v1", _ALL, False),
    ProviderPreset("openai-compatible", "OpenAI-compatible endpoint", None, _ALL, False),
    ProviderPreset(
        "local",
        "Local model (packaged or from a path)",
        None,
        _types(EMBEDDING, RERANK),
        False,
        uses_base_url=False,
        known_dimensions=MappingProxyType({"all-MiniLM-L6-v2": 384}),
    ),
)

PROVIDERS: Mapping[str, ProviderPreset] = MappingProxyType({p.name: p for p in _PRESETS})


def get_provider(name: str) -> ProviderPreset | None:
    """The preset called ``name`` (exact, lower-case), or None when there is no such provider."""
    return PROVIDERS.get(name)


def provider_names() -> list[str]:
    return list(PROVIDERS)
