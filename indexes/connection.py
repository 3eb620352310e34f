"""Where a remote model is and how to sign in: one check shared by the chat, embedding and
rerank builders, so every kind of model refuses an incomplete registration in the same words."""

from __future__ import annotations

from dataclasses import dataclass

from indexes.errors import ModelError
from indexes.providers import ProviderPreset, get_provider
from indexes.specs import ModelSpec


@dataclass(frozen=True)
class RemoteConnection:
    preset: ProviderPreset
    base_url: str
    api_key: str  # "" when the provider takes none


def remote_connection(spec: ModelSpec) -> RemoteConnection:
    """The preset, base URL and key of a remote ``spec``; a ModelError names what is missing."""
    kind = spec.model_type
    preset = get_provider(spec.provider)
    if preset is None:
        raise ModelError(f"Unknown model provider '{spec.provider}'.")
    if not preset.supports(kind):
        raise ModelError(f"{preset.label} offers no {kind} models.")
    what = f"{preset.label} {kind} model '{spec.model_name}'"
    base_url = spec.base_url or preset.default_base_url
    if not base_url:
        raise ModelError(f"{what} needs a base URL.")
    api_key = spec.api_key.get_secret_value() if spec.api_key else ""
    if preset.requires_api_key and not api_key:
        raise ModelError(f"{what} needs an API key.")
    if preset.requires_api_version and not spec.api_version:
        raise ModelError(f"{what} needs an API version.")
    return RemoteConnection(preset, base_url, api_key)
