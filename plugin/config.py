"""Configuration: the per-request `moa` object, the server's YAML file, and how both resolve into
the `Recipe` an approach runs.

Precedence is request > preset > server defaults > built-in defaults. A request names models and
presets, never endpoints or keys: those exist only in the server's file (with `${ENV}` references
for secrets), so a client cannot point the proxy at an address of its choosing.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from selfmoa.approaches import DEFAULT_ENDPOINT, DEFAULT_SAMPLES, VARIANTS, Hedging, Proposer, Recipe, max_calls
from selfmoa.approaches.agreement import parse_reader
from selfmoa.approaches.backend import cache_hints

from .hedging import HedgingSettings
from .validation import ConfigError, field_path, json_type, most_specific, parse

SLUGS = tuple(VARIANTS)
# The request's own fields that shape the answer the user sees: they reach the final aggregation.
FINAL_FIELDS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "response_format",
                "frequency_penalty", "presence_penalty", "logit_bias")
# Fields about the request itself, never sent to a backend. Every other field reaches every call
# (tools, logprobs, backend-specific knobs), as it would reach the plain model.
OWN_FIELDS = ("model", "messages", "n", "stream", "stream_options", "moa", "optillm_approach")
# The built-in defaults are the algorithms' own (`Recipe`'s), defined there once; `trace` is ours.
_RECIPE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}
BUILT_IN: dict[str, Any] = {
    "samples": DEFAULT_SAMPLES,
    **{key: _RECIPE_DEFAULTS[key] for key in ("temperature", "layers", "window", "synthesis_slots", "mode",
                                              "placement", "min_samples", "timeout", "include_reasoning",
                                              "answer")},
    "trace": False,
}


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class ProposerEntry(BaseModel):
    model_config = _STRICT
    model: str = Field(min_length=1)
    samples: int | None = Field(default=None, ge=1)


class RoutedProposer(ProposerEntry):
    """A proposer as the server may write it: possibly on a named endpoint."""

    endpoint: str = DEFAULT_ENDPOINT


class RoutedModel(BaseModel):
    model_config = _STRICT
    model: str = Field(min_length=1)
    endpoint: str = DEFAULT_ENDPOINT


class Options(BaseModel):
    """The `moa` keys a request may send; every key is optional and falls through when unset."""

    model_config = _STRICT
    samples: int | None = Field(default=None, ge=1)
    proposers: list[str | ProposerEntry] | None = Field(default=None, min_length=1)
    aggregator: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    layers: int | None = Field(default=None, ge=1)
    window: int | None = Field(default=None, ge=2)
    synthesis_slots: int | None = Field(default=None, ge=1)
    mode: Literal["synthesize", "select"] | None = None
    placement: Literal["system", "last_user", "auto"] | None = None
    min_samples: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    grace: float | None = Field(default=None, ge=0)
    include_reasoning: bool | None = None
    answer: str | None = Field(default=None, min_length=1)  # numeric, choice, exact or re:PATTERN
    agree: float | None = Field(default=None, gt=0, le=1)
    first: int | None = Field(default=None, ge=1)
    trace: bool | None = None
    preset: str | None = Field(default=None, min_length=1)


class ServerOptions(Options):
    """Defaults and presets in the server file: like `Options`, plus endpoint routing."""

    proposers: list[str | RoutedProposer] | None = Field(default=None, min_length=1)  # type: ignore[assignment]
    aggregator: str | RoutedModel | None = None  # type: ignore[assignment]
    preset: None = None


class RequestFields(BaseModel):
    """The request's own OpenAI fields that selfmoa reads or forwards to the aggregator.

    Checked up front so that a wrong type is a 400 naming the field: sent upstream, it would come
    back as a backend refusal, which parameter adaptation would then silently drop.
    """

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    n: int = Field(default=1, ge=1)  # no null: optillm runs the approach `n` times
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # before max_tokens: the proxy copies it there
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class Caps(BaseModel):
    """Hard limits that protect the deployment from cost amplification by a single request."""

    model_config = _STRICT
    samples: int = Field(default=64, ge=1)
    layers: int = Field(default=4, ge=1)
    calls: int = Field(default=256, ge=1)
    timeout: float = Field(default=600.0, gt=0)
    message_chars: int = Field(default=1_000_000, ge=1)


class Endpoint(BaseModel):
    model_config = _STRICT
    base_url: str = Field(pattern=r"^https?://")
    api_key: SecretStr = SecretStr("none")


class ModelInfo(BaseModel):
    model_config = _STRICT
    context_window: int = Field(ge=1)


class ServerConfig(BaseModel):
    model_config = _STRICT
    defaults: ServerOptions = ServerOptions()
    presets: dict[str, ServerOptions] = {}
    caps: Caps = Caps()
    endpoints: dict[str, Endpoint] = {}
    models: dict[str, ModelInfo] = {}
    hedging: HedgingSettings = HedgingSettings()
    list_approaches: bool = True  # /v1/models also lists `self_moa-M`, ... for each backend model


def load_server_config(path: str | Path | None) -> ServerConfig:
    """The server file at `path` (None: built-in defaults only), with `${ENV}` references filled in."""
    if path is None:
        return ServerConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("SELFMOA_CONFIG", f"cannot read {path}: {error.strerror}") from None
    raw = yaml.safe_load(_interpolate(text)) or {}
    config = parse(ServerConfig, raw, prefix=str(path))
    _check_routes(config, str(path))
    return config


def _interpolate(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"${{{name}}}", "environment variable referenced by the server config is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value, text)


def _check_routes(config: ServerConfig, prefix: str) -> None:
    known = {DEFAULT_ENDPOINT, *config.endpoints}
    for name, options in [("defaults", config.defaults), *((f"presets.{k}", v) for k, v in config.presets.items())]:
        routed = [p for p in options.proposers or [] if isinstance(p, RoutedProposer)]
        if isinstance(options.aggregator, RoutedModel):
            routed.append(options.aggregator)  # type: ignore[arg-type]
        for item in routed:
            if item.endpoint not in known:
                raise ConfigError(f"{prefix}: {name}", f"unknown endpoint {item.endpoint!r}; defined: {sorted(known)}")


@dataclass(frozen=True)
class Plan:
    """What one request asks of an approach: the recipe to run, whether to return its trace, and
    how its calls are hedged (the server's settings, within what its caps leave)."""

    recipe: Recipe
    trace: bool
    hedging: Hedging = Hedging()


def resolve(approach: str, model: str, body: Mapping[str, Any] | None, messages: Any, server: ServerConfig) -> Recipe:
    """The recipe for one request, or a `ConfigError` naming the first field that is wrong."""
    return plan(approach, model, body, messages, server).recipe


def plan(approach: str, model: str, body: Mapping[str, Any] | None, messages: Any, server: ServerConfig) -> Plan:
    """The plan for one request (`body`: the request's fields), or a `ConfigError` naming the first
    field that is wrong."""
    body = body or {}
    raw = body.get("moa", {})
    if not isinstance(raw, dict):
        raise ConfigError("moa", f"must be an object, not {json_type(raw)}")
    request: Options = parse(Options, raw, prefix="moa")
    fields: RequestFields = parse(RequestFields, dict(body), prefix="")
    settings = {**BUILT_IN, **_set(server.defaults), **_set(_preset(server, request.preset)), **_set(request)}
    if "timeout" not in request.model_fields_set:  # the server's cap bounds its own default too
        settings["timeout"] = min(settings["timeout"], server.caps.timeout)
    check_messages(messages, server.caps)
    recipe = _recipe(approach, model, settings, body, messages, server)
    _check_repeats(fields.n, recipe, server.caps)
    hedging = server.hedging.policy(planned=max_calls(recipe), runs=fields.n, cap=server.caps.calls)
    return Plan(recipe=recipe, trace=settings["trace"], hedging=hedging)


def request_timeout(server: ServerConfig) -> float:
    """The deadline of a request that sets none itself (a plain model's): the server's default,
    within its cap."""
    default = server.defaults.timeout if server.defaults.timeout is not None else BUILT_IN["timeout"]
    return float(min(default, server.caps.timeout))


def _preset(server: ServerConfig, name: str | None) -> Options:
    if name is None:
        return Options()
    if name not in server.presets:
        available = ", ".join(sorted(server.presets)) or "none defined"
        raise ConfigError("moa.preset", f"unknown preset {name!r} (available: {available})")
    return server.presets[name]


def _set(options: Options) -> dict[str, Any]:
    return {k: getattr(options, k) for k in options.model_fields_set if k != "preset"}


def _recipe(
    approach: str, model: str, s: dict[str, Any], body: Mapping[str, Any], messages: Any, server: ServerConfig
) -> Recipe:
    if s["synthesis_slots"] >= s["window"]:
        raise ConfigError("moa.synthesis_slots", f"must be less than window ({s['window']})")
    aggregator = s.get("aggregator") or model
    routed = aggregator if isinstance(aggregator, RoutedModel) else RoutedModel(model=aggregator)
    final, shared = request_params(body)
    request_max = final.get("max_completion_tokens") or final.get("max_tokens")
    info = server.models.get(routed.model)
    recipe = Recipe(
        proposers=_proposers(approach, model, s),
        aggregator=routed.model,
        aggregator_endpoint=routed.endpoint,
        temperature=s["temperature"],
        max_tokens=s.get("max_tokens") or request_max,
        layers=s["layers"],
        sequential=VARIANTS[approach].sequential,
        window=s["window"],
        synthesis_slots=s["synthesis_slots"],
        mode=s["mode"],
        placement=s["placement"],
        min_samples=s["min_samples"],
        include_reasoning=s["include_reasoning"],
        context_budget=info.context_window - (request_max or 0) if info else None,
        timeout=s["timeout"],
        grace=s.get("grace"),
        answer=_reader(s["answer"]),
        agree=s.get("agree"),
        first=s.get("first"),
        final_params=final,
        shared_params={**cache_hints(messages), **shared},  # the request's own values win
    )
    _check_caps(recipe, server.caps)
    _check_agreement(recipe)
    return recipe


def request_params(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's fields for the backend: (the final call's own, the ones every call shares)."""
    sent = {k: v for k, v in body.items() if v is not None and k not in OWN_FIELDS}
    if "max_completion_tokens" in sent:  # optillm copies it into max_tokens; one limit is enough
        sent.pop("max_tokens", None)
    final = {k: v for k, v in sent.items() if k in FINAL_FIELDS}
    return final, {k: v for k, v in sent.items() if k not in FINAL_FIELDS}


def _proposers(approach: str, model: str, s: dict[str, Any]) -> tuple[Proposer, ...]:
    if not VARIANTS[approach].mixed:  # `proposers` is Mixed's: one `moa` object can serve `self_moa|mixed_moa`
        return (Proposer(model=model, samples=s["samples"]),)
    entries = s.get("proposers")
    if not entries:
        raise ConfigError("moa.proposers", f"required for {approach}: a list of model names or {{model, samples}}")
    bare = [e for e in entries if isinstance(e, str) or e.samples is None]
    share, extra = divmod(s["samples"], len(bare)) if bare else (0, 0)
    proposers = []
    for entry in entries:
        item = RoutedProposer(model=entry) if isinstance(entry, str) else entry
        if item.samples is None:
            count, extra = share + (1 if extra > 0 else 0), extra - 1
        else:
            count = item.samples
        if count > 0:
            endpoint = getattr(item, "endpoint", DEFAULT_ENDPOINT)
            proposers.append(Proposer(model=item.model, samples=count, endpoint=endpoint))
    return tuple(proposers)


def _reader(option: str) -> str:
    """`moa.answer`, checked (a pattern that does not compile is a 400 now, not an error later)."""
    try:
        parse_reader(option)
    except ValueError as error:
        raise ConfigError("moa.answer", str(error)) from None
    return option


def _check_agreement(recipe: Recipe) -> None:
    if recipe.first is not None and recipe.agree is None:
        raise ConfigError("moa.first", "needs moa.agree: the rest of the samples are drawn only if the first disagree")
    if recipe.first is not None and recipe.first > recipe.total_samples:
        raise ConfigError("moa.first", f"must be at most the number of proposals ({recipe.total_samples})")


def _check_caps(recipe: Recipe, caps: Caps) -> None:
    if recipe.total_samples > caps.samples:
        raise ConfigError("moa.samples", f"{recipe.total_samples} proposals exceed the server's cap of {caps.samples}")
    if recipe.layers > caps.layers:
        raise ConfigError("moa.layers", f"{recipe.layers} exceeds the server's cap of {caps.layers}")
    if recipe.timeout > caps.timeout:
        raise ConfigError("moa.timeout", f"{recipe.timeout:g} s exceeds the server's cap of {caps.timeout:g} s")
    if recipe.min_samples > recipe.total_samples:
        raise ConfigError("moa.min_samples", f"must be at most the number of proposals ({recipe.total_samples})")
    if max_calls(recipe) > caps.calls:
        raise ConfigError(
            "moa.samples", f"up to {max_calls(recipe)} backend calls exceed the server's cap of {caps.calls}"
        )


def _check_repeats(n: int, recipe: Recipe, caps: Caps) -> None:
    """optillm runs the whole approach `n` times for a request's `n`: that multiplies its calls too."""
    if n > 1 and n * max_calls(recipe) > caps.calls:
        calls = max_calls(recipe)
        raise ConfigError("n", f"{n} runs of up to {calls} backend calls exceed the server's cap of {caps.calls}")


class ChatMessage(BaseModel):
    """Enough of a chat message to refuse garbage early; other fields (tool_calls, name) pass."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


_MESSAGES = TypeAdapter(list[ChatMessage])


def check_messages(messages: Any, caps: Caps) -> None:
    """Refuse an empty, malformed or oversize conversation, naming the offending field."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError("messages", "must be a non-empty list of {role, content} objects")
    try:
        _MESSAGES.validate_python(messages)
    except ValidationError as error:
        problem = most_specific(error)
        raise ConfigError(field_path("messages", problem["loc"]), problem["msg"]) from None
    size = sum(len(str(m.get("content") or "")) for m in messages)
    if size > caps.message_chars:
        raise ConfigError("messages", f"{size} characters exceed the server's cap of {caps.message_chars}")
