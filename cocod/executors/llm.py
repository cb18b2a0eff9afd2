"""``EmbedText`` and ``ExtractByLlm`` over an OpenAI-compatible HTTP API (httpx, async).

Only called when a user configures them: nothing here runs, and no client is made, until a
row needs it. Requests go out with async httpx on the engine's loop (never a blocking call
there: the TLS context, which reads CA files, is built once in the worker thread that
creates the executor). A 429, a 5xx or a transport error is retried with capped, jittered
exponential backoff (honouring ``Retry-After`` up to the cap); anything else, or running out
of attempts, fails that source row with an :class:`LlmApiError` that says what the server
answered. A reply that is not what the API promises is an :class:`LlmResponseError`.

The JSON schema ``ExtractByLlm`` asks for is built by :mod:`cocod.executors.llm_schema`; a
non-struct output type is wrapped as ``{"value": ...}`` (OpenAI wants a top-level object)
and unwrapped from the reply.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import numpy as np

from cocod import auth_registry
from cocod.engine.values import from_json_value
from cocod.errors import FlowDefinitionError, RowError, SettingsError
from cocod.executors.llm_schema import json_schema
from cocod.flow.specs import AnalyzedFunction, ArgSchema, FunctionExecutor, OpOptions, spec_to_json
from cocod.flow.types import ValueType, basic, type_of_annotation
from cocod.llm import LlmApiType, LlmSpec, OpenAiConfig
from cocod.ops.functions import EmbedText, ExtractByLlm


class LlmApiError(RowError):
    """The model service refused or failed a request (after retries, where retryable)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LlmResponseError(RowError):
    """The model service answered, but not with what its API promises."""


# v0's default addresses (rust/cocoindex/src/llm/*.rs) for the OpenAI-compatible services.
DEFAULT_ADDRESSES = {
    LlmApiType.OPENAI: "https://api.openai.com/v1",
    LlmApiType.VLLM: "http://127.0.0.1:8000/v1",
    LlmApiType.LITE_LLM: "http://127.0.0.1:4000",
    LlmApiType.OPEN_ROUTER: "https://openrouter.ai/api/v1",
    LlmApiType.NOVITA: "https://api.novita.ai/openai/v1",
    LlmApiType.OLLAMA: "http://localhost:11434",
}
_KEY_ENV = {
    LlmApiType.OPENAI: "OPENAI_API_KEY",
    LlmApiType.OPEN_ROUTER: "OPENROUTER_API_KEY",
    LlmApiType.NOVITA: "NOVITA_API_KEY",
    LlmApiType.LITE_LLM: "LITELLM_API_KEY",
    LlmApiType.VLLM: "VLLM_API_KEY",
}
DEFAULT_EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
EMBED_BATCH_SIZE = 64  # v0's batch size for embedding services

MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0
REQUEST_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where and how to send requests; built in a worker thread (reads CA files)."""

    base_url: str
    headers: dict[str, str]
    tls: ssl.SSLContext

    async def post(self, path: str, payload: dict[str, Any]) -> Any:
        """POST JSON, retrying what may succeed later; the parsed JSON reply."""
        import httpx  # here, not at import: it costs a one-shot `cocod update` ~80 ms of CPU

        url = f"{self.base_url}/{path}"
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                async with httpx.AsyncClient(verify=self.tls, timeout=REQUEST_TIMEOUT_S) as c:
                    response = await c.post(url, json=payload, headers=self.headers)
            except httpx.TransportError as e:
                problem = f"{type(e).__name__}: {e}"
                status: int | None = None
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise LlmResponseError(
                            f"{url} answered {response.status_code} with a body that is not "
                            f"JSON: {response.text[:200]!r}"
                        ) from None
                status = response.status_code
                problem = f"HTTP {status}: {response.text[:300]}"
                if status != 429 and status < 500:
                    raise LlmApiError(f"{url} refused the request ({problem}){_hint(status)}")
                retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt >= MAX_ATTEMPTS:
                raise LlmApiError(
                    f"{url} failed {attempt} times, last: {problem}; the service may be down "
                    "or rate-limiting, the row is retried on the next update",
                    status=status,
                )
            await anyio.sleep(backoff_delay(attempt, retry_after))


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Full jitter under a capped exponential; a server's Retry-After wins, up to the cap."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    if retry_after is not None:
        return min(BACKOFF_CAP_S, max(retry_after, 0.0))
    return random.uniform(ceiling / 2, ceiling)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _hint(status: int) -> str:
    if status in (401, 403):
        return "; check the API key (api_key=cocod.auth_registry.add_auth_entry(...))"
    if status == 404:
        return "; check the model name and the address (it should end in /v1 for most servers)"
    return ""


def check_api_type(kind: str, api_type: Any) -> LlmApiType:
    if not isinstance(api_type, LlmApiType) or api_type not in DEFAULT_ADDRESSES:
        supported = ", ".join(t.name for t in DEFAULT_ADDRESSES)
        raise FlowDefinitionError(
            f"{kind}: api_type {api_type!r} is not supported by cocod, which speaks the "
            f"OpenAI-compatible API ({supported}); serve the model behind an OpenAI-compatible "
            "endpoint and use api_type=LlmApiType.OPENAI with address='http://host:port/v1'"
        )
    return api_type


def open_endpoint(
    kind: str, api_type: LlmApiType, address: str | None, api_key: Any, api_config: Any
) -> Endpoint:
    """Resolve address and credentials when the executor is created (run time)."""
    base = (address or DEFAULT_ADDRESSES[api_type]).rstrip("/")
    if api_type is LlmApiType.OLLAMA and not base.endswith("/v1"):
        base += "/v1"  # Ollama's OpenAI-compatible endpoints
    key = auth_registry.resolve(api_key)
    if key is None and api_type in _KEY_ENV:
        key = os.environ.get(_KEY_ENV[api_type])
    if key is None and api_type is LlmApiType.OPENAI and address is None:
        raise SettingsError(
            f"{kind}: no API key for OpenAI; set OPENAI_API_KEY or pass "
            "api_key=cocod.auth_registry.add_auth_entry('openai', '...')"
        )
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if isinstance(api_config, OpenAiConfig):
        if api_config.org_id:
            headers["OpenAI-Organization"] = api_config.org_id
        if api_config.project_id:
            headers["OpenAI-Project"] = api_config.project_id
    return Endpoint(base, headers, ssl.create_default_context())


# --- EmbedText -------------------------------------------------------------------------------


class EmbedTextExecutor:
    """A batching executor: a list of texts in, one float32 vector per text out."""

    def __init__(self, spec: EmbedText, dimension: int) -> None:
        self._spec = spec
        self._dimension = dimension
        self._endpoint = open_endpoint(
            "EmbedText", spec.api_type, spec.address, spec.api_key, spec.api_config
        )

    async def __call__(self, texts: list[str]) -> list[np.ndarray]:
        payload: dict[str, Any] = {"model": self._spec.model, "input": list(texts)}
        if self._spec.output_dimension is not None:
            payload["dimensions"] = self._spec.output_dimension
        reply = await self._endpoint.post("embeddings", payload)
        try:
            data = sorted(reply["data"], key=lambda d: d.get("index", 0))
            vectors = [np.asarray(d["embedding"], dtype=np.float32) for d in data]
        except (KeyError, TypeError, ValueError) as e:
            raise LlmResponseError(f"EmbedText: unexpected embeddings reply ({e!r})") from None
        if len(vectors) != len(texts):
            raise LlmResponseError(
                f"EmbedText: expected {len(texts)} embeddings, the service returned {len(vectors)}"
            )
        for v in vectors:
            if v.shape != (self._dimension,):
                raise LlmResponseError(
                    f"EmbedText: expected dimension {self._dimension}, got {v.shape[0]} from "
                    f"model {self._spec.model!r}; set output_dimension={v.shape[0]} (or "
                    "expected_output_dimension) to match the model"
                )
        return vectors


class EmbedTextDefinition:
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        from cocod.executors.functions import bind_arguments

        assert isinstance(spec, EmbedText)

        def _sig(text: Any) -> None: ...

        bound = bind_arguments("EmbedText", _sig, args, kwargs, {"text": ("Str",)})
        check_api_type("EmbedText", spec.api_type)
        dimension = (
            spec.expected_output_dimension
            or spec.output_dimension
            or DEFAULT_EMBEDDING_DIMENSIONS.get(spec.model)
        )
        if dimension is None:
            raise FlowDefinitionError(
                f"EmbedText: the dimension of model {spec.model!r} is unknown; set "
                "output_dimension=N (sent to the service) or expected_output_dimension=N"
            )
        output = ValueType("Vector", element=basic("Float32"), dimension=int(dimension))
        if bound["text"].type.nullable:
            output = output.with_nullable()

        def create_executor() -> FunctionExecutor:
            return EmbedTextExecutor(spec, int(dimension))

        return AnalyzedFunction(
            kind="EmbedText",
            spec_json=spec_to_json(spec),
            output_type=output,
            options=OpOptions(cache=True, batching=True, max_batch_size=EMBED_BATCH_SIZE),
            create_executor=create_executor,
            required_inputs=frozenset({0 if args else "text"}),
            is_async=True,
        )


# --- ExtractByLlm ----------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You are a helpful assistant that processes user-provided inputs (text, images, or both) "
    "to produce structured outputs. Your task is to follow the provided instructions to "
    "generate or extract information and output valid JSON matching the specified schema. "
    "Base your response solely on the content of the input. For generative tasks, respond "
    "accurately and relevantly based on what is provided. Unless explicitly instructed "
    "otherwise, output only the JSON. DO NOT include explanations, descriptions, or "
    "formatting outside the JSON."
)


class ExtractByLlmExecutor:
    def __init__(self, spec: ExtractByLlm, output: ValueType) -> None:
        llm: LlmSpec = spec.llm_spec
        self._model = llm.model
        self._output = output
        self._wrapped = output.kind != "Struct"
        schema = json_schema(output.with_nullable(False))
        if self._wrapped:
            schema = {
                "type": "object",
                "properties": {"value": schema},
                "required": ["value"],
                "additionalProperties": False,
            }
        self._schema = schema
        self._system = SYSTEM_PROMPT + (f"\n\n{spec.instruction}" if spec.instruction else "")
        self._endpoint = open_endpoint(
            "ExtractByLlm", llm.api_type, llm.address, llm.api_key, llm.api_config
        )

    async def __call__(self, text: str | None = None, image: bytes | None = None) -> Any:
        if text is None and image is None:
            return None
        user: Any = text or ""
        if image is not None:
            url = f"data:{_image_mime(image)};base64,{base64.b64encode(image).decode()}"
            user = [
                {"type": "text", "text": text or ""},
                {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
            ]
        payload = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": self._system},
                {"role": "user", "content": user},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "ExtractedData", "schema": self._schema, "strict": True},
            },
        }
        reply = await self._endpoint.post("chat/completions", payload)
        try:
            content = reply["choices"][0]["message"]["content"]
            value = json.loads(content, parse_constant=_not_json)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise LlmResponseError(
                f"ExtractByLlm: model {self._model!r} did not answer with JSON ({e!r}); "
                "check that the service supports response_format json_schema"
            ) from None
        if self._wrapped:
            value = value.get("value") if isinstance(value, dict) else None
        try:
            return from_json_value(value, self._output)
        except (AttributeError, TypeError, ValueError) as e:
            raise LlmResponseError(
                f"ExtractByLlm: the answer does not fit {self._output.describe()} ({e!r}): "
                f"{content[:200]!r}"
            ) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise RowError("ExtractByLlm: the image is not PNG, JPEG, GIF or WebP")


class ExtractByLlmDefinition:
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        from cocod.executors.functions import bind_arguments

        assert isinstance(spec, ExtractByLlm)

        def _sig(text: Any = None, image: Any = None) -> None: ...

        bind_arguments("ExtractByLlm", _sig, args, kwargs, {"text": ("Str",), "image": ("Bytes",)})
        check_api_type("ExtractByLlm", spec.llm_spec.api_type)
        output = type_of_annotation(spec.output_type)
        json_schema(output)  # an output type no schema can express fails now, not per row
        output = output.with_nullable()

        def create_executor() -> FunctionExecutor:
            return ExtractByLlmExecutor(spec, output)

        return AnalyzedFunction(
            kind="ExtractByLlm",
            spec_json={**spec_to_json(spec), "output_type": output.to_json()},
            output_type=output,
            options=OpOptions(cache=True),
            create_executor=create_executor,
            is_async=True,
        )
