"""The provider preset table: plain data the registry and the model builders agree on."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from indexes import providers
from indexes.providers import MODEL_TYPES, PROVIDERS, get_provider, provider_names

EXPECTED = {
    "openai",
    "azure",
    "deepseek",
    "qwen",
    "siliconflow",
    "moonshot",
    "zhipu",
    "ollama",
    "vllm",
    "xinference",
    "llamacpp",
    "openai-compatible",
    "local",
}


def test_every_provider_is_there() -> None:
    assert set(provider_names()) == EXPECTED
    for name, preset in PROVIDERS.items():
        assert preset.name == name
        assert preset.model_types
        assert preset.model_types <= set(MODEL_TYPES)
        if preset.default_base_url is not None:
            assert preset.default_base_url.startswith(("http://", "https://"))
            assert not preset.default_base_url.endswith("/")


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("deepseek", "https://api.deepseek.com/v1"),
        ("qwen", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        ("siliconflow", "https://api.siliconflow.cn/v1"),
        ("moonshot", "https://api.moonshot.cn/v1"),
        ("zhipu", "https://open.bigmodel.cn/api/paas/v4"),
        ("ollama", "http://127.0.0.1:11434/v1"),
        ("vllm", "http://127.0.0.1:8000/v1"),
        ("xinference", "http://127.0.0.1:9997/v1"),
        ("llamacpp", "http://127.0.0.1:8080/v1"),
        ("azure", None),
        ("openai-compatible", None),
        ("local", None),
    ],
)
def test_default_base_urls(name: str, url: str | None) -> None:
    preset = get_provider(name)
    assert preset is not None
    assert preset.default_base_url == url


def test_rules_the_registry_relies_on() -> None:
    azure = PROVIDERS["azure"]
    assert azure.requires_api_version
    assert azure.requires_base_url
    assert azure.requires_api_key
    assert PROVIDERS["openai-compatible"].requires_base_url
    local = PROVIDERS["local"]
    assert not local.uses_base_url
    assert not local.requires_base_url
    assert not local.requires_api_key
    assert not local.supports("chat")
    assert local.default_dimension("all-MiniLM-L6-v2") == 384
    assert local.default_dimension("some/other/path") is None
    assert not PROVIDERS["deepseek"].supports("embedding")
    assert PROVIDERS["siliconflow"].supports("rerank")
    assert not PROVIDERS["ollama"].requires_api_key
    assert get_provider("OpenAI") is None
    assert get_provider("nonesuch") is None


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        PROVIDERS["x"] = PROVIDERS["openai"]  # type: ignore[index]
    with pytest.raises(TypeError):
        PROVIDERS["local"].known_dimensions["x"] = 1  # type: ignore[index]


def test_plain_data_only() -> None:
    # The registry imports this module in every API process: it must not pull in LlamaIndex
    # (slow, heavy) nor anything of the app.
    tree = ast.parse(Path(providers.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
