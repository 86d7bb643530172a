"""The serving front's batch API as pydantic models: what ``POST /generate`` and
``POST /loglikelihood`` accept and answer, validated on the way in (a request that does not
fit is a 400 naming the field) and published as an OpenAPI document (``GET /openapi.json``).

Numbers are strict: a string is not a number, ``NaN`` and infinities are refused, and every
range is checked (``temperature`` in [0, 2], ``top_p`` in (0, 1]). Limits the server sets
(prompts per request, ``max_tokens``) are checked by the front against its own settings, so
the message names the server's limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Prompt = Annotated[
    str | list[Annotated[int, Field(ge=0)]],
    Field(description="text (needs the server's tokenizer) or token ids"),
]


def _floats(data: Any) -> Any:
    """Whole numbers given for float fields as floats (strict mode refuses 1 for a float,
    and a JSON writer may send 1 for 1.0); booleans are left for the type check."""
    if isinstance(data, dict):
        for key in ("temperature", "top_p"):
            v = data.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                data = {**data, key: float(v)}
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class GenerateRequest(_Strict):
    prompts: list[Prompt] = Field(min_length=1, description="one completion per prompt")
    max_tokens: int = Field(16, ge=1, description="tokens per completion, at most the server's cap")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy")
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="nucleus: the smallest set of tokens whose probability reaches top_p",
    )
    seed: int | None = Field(None, ge=0, description="the same seed, the same sample")
    stop: list[Annotated[str, Field(min_length=1)]] | str | None = Field(
        None, description="the completion ends before the first of these strings"
    )

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        return _floats(data)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class Completion(BaseModel):
    text: str
    token_ids: list[int]
    finish_reason: Literal["length", "stop"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    completions: list[Completion]
    usage: Usage


class LoglikelihoodRequest(_Strict):
    prompts: list[Prompt] = Field(min_length=1, description="the contexts")
    continuations: list[Prompt] = Field(
        min_length=1, description="scored after the prompt of the same index (not empty)"
    )

    @model_validator(mode="after")
    def _pairs(self) -> LoglikelihoodRequest:
        if len(self.prompts) != len(self.continuations):
            raise ValueError(
                f"prompts and continuations must be of equal length, got {len(self.prompts)} "
                f"and {len(self.continuations)}"
            )
        for i, c in enumerate(self.continuations):
            if len(c) == 0:
                raise ValueError(f"continuations[{i}] is empty: there is nothing to score")
        return self


class LoglikelihoodResponse(BaseModel):
    ll: list[float] = Field(description="each continuation's summed token log-probability")


class _OpenAI(BaseModel):
    """What the front reads of an OpenAI request, checked strictly; every other field an
    OpenAI client sends (``model``, ``n``, ``user``, ``logprobs``, ...) is allowed and kept."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="wins over max_tokens")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    return_token_ids: bool = Field(False, description="token_ids in each choice (vLLM's)")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    ignore_eos: bool = Field(False, description="decode to max_tokens (vLLM's extension)")

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        return _floats(data)

    def tokens(self, default: int = 16) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def sampling(self) -> dict[str, Any]:
        """The options a core that samples reads from ``LLMRequest.extra``."""
        out: dict[str, Any] = {"ignore_eos": self.ignore_eos}
        for key in ("temperature", "top_p", "seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class CompletionRequest(_OpenAI):
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    ) = Field(description="text (needs the server's tokenizer) or token ids")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: str
    content: str | None = None


class ChatCompletionRequest(_OpenAI):
    messages: list[ChatMessage] = Field(min_length=1)


class ErrorBody(BaseModel):
    message: str
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody


def first_error(exc: ValidationError) -> str:
    """One line for a validation failure: the deepest problem (in a prompt that is neither
    text nor token ids, what is wrong with it as ids), with where it is."""
    e = max(exc.errors(), key=lambda e: len(e["loc"]))
    tags = ("str", "int")  # a union's member names in a location, not part of the path
    where = ".".join(str(p) for p in e["loc"] if p not in tags and "[" not in str(p))
    msg = e["msg"].removeprefix("Value error, ")
    return f"{where or 'body'}: {msg}"


ROUTES: dict[str, tuple[str, type[BaseModel] | None, type[BaseModel] | None]] = {
    "/generate": ("post", GenerateRequest, GenerateResponse),
    "/loglikelihood": ("post", LoglikelihoodRequest, LoglikelihoodResponse),
}
ERRORS = {
    "400": "the request does not validate",
    "401": "no API key, or one the server does not know",
    "413": "the body, or its prompts, over the server's limits",
    "429": "over the key's rate, or the admission queue is full (Retry-After says when)",
    "500": "the backend failed the request",
    "501": "the core cannot do this (loglikelihood: the message names the cores that can)",
    "503": "draining (SIGTERM) or the backend is down",
    "504": "the request took longer than the server's timeout",
}


def openapi(title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the batch API (schemas from the models above)."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(js.pop("$defs", {}))
        schemas[model.__name__] = js
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    err = ref(ErrorResponse)
    from harness.serve.routes import RouteRequest, RouteResponse

    routes = {
        **ROUTES,
        "/route": ("post", RouteRequest, RouteResponse),
        "/v1/completions": ("post", CompletionRequest, None),
        "/v1/chat/completions": ("post", ChatCompletionRequest, None),
    }
    for path, (method, req, resp) in routes.items():
        ok = "OpenAI's response, or its SSE stream" if resp is None else "OK"
        body = {} if resp is None else {"content": {"application/json": {"schema": ref(resp)}}}
        op: dict[str, Any] = {"responses": {"200": {"description": ok, **body}}}
        for code, why in ERRORS.items():
            op["responses"][code] = {
                "description": why,
                "content": {"application/json": {"schema": err}},
            }
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(req)}},
            }
        paths[path] = {method: op}
    for path, why in (("/healthz", "the process is up"), ("/readyz", "the model is loaded")):
        paths[path] = {
            "get": {
                "responses": {
                    "200": {"description": why},
                    "503": {"description": "not yet, or draining"},
                }
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
