"""v0's ``cocoindex.llm``: which model service an LLM-backed function talks to.

Parameters only (specs users write in flows); the HTTP client is
:mod:`cocod.executors.llm`. cocod speaks the OpenAI-compatible HTTP API, so the API types
served that way work: ``OPENAI`` (or any compatible server through ``address``), ``VLLM``,
``LITE_LLM``, ``OPEN_ROUTER``, ``NOVITA`` and ``OLLAMA`` (through its ``/v1`` endpoints).
The others are accepted as values, and a flow using them fails while it is defined with a
message that says to use an OpenAI-compatible endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cocod.auth_registry import TransientAuthEntryReference


class LlmApiType(Enum):
    """The type of LLM API to use (v0's values)."""

    OPENAI = "OpenAi"
    OLLAMA = "Ollama"
    GEMINI = "Gemini"
    VERTEX_AI = "VertexAi"
    ANTHROPIC = "Anthropic"
    LITE_LLM = "LiteLlm"
    OPEN_ROUTER = "OpenRouter"
    VOYAGE = "Voyage"
    VLLM = "Vllm"
    BEDROCK = "Bedrock"
    AZURE_OPENAI = "AzureOpenAi"
    NOVITA = "Novita"


@dataclass
class VertexAiConfig:
    """Vertex AI parameters (accepted for v0 compatibility; Vertex AI is not supported)."""

    kind = "VertexAi"

    project: str
    region: str | None = None


@dataclass
class OpenAiConfig:
    """OpenAI organisation and project, sent as ``OpenAI-Organization``/``OpenAI-Project``."""

    kind = "OpenAi"

    org_id: str | None = None
    project_id: str | None = None


@dataclass
class AzureOpenAiConfig:
    """Azure OpenAI parameters (accepted for v0 compatibility; Azure is not supported)."""

    kind = "AzureOpenAi"

    deployment_id: str
    api_version: str | None = None


@dataclass
class LlmSpec:
    """A model on a service: ``LlmSpec(api_type=LlmApiType.OPENAI, model="gpt-4o")``."""

    api_type: LlmApiType
    model: str
    address: str | None = None
    api_key: TransientAuthEntryReference[str] | None = None
    api_config: VertexAiConfig | OpenAiConfig | AzureOpenAiConfig | None = None


__all__ = ["AzureOpenAiConfig", "LlmApiType", "LlmSpec", "OpenAiConfig", "VertexAiConfig"]
