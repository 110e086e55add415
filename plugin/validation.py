"""Validation errors that name their field: pydantic's complaints turned into a `ConfigError`
whose field path a user can act on (`moa.proposers[1].samples`), with the allowed keys for an
unknown one. Shared by the server file, the `moa` object and the request's own fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from selfmoa.approaches import SelfMoAError

M = TypeVar("M", bound=BaseModel)


class ConfigError(SelfMoAError):
    """Refused configuration: names the field and what is allowed. Answered with HTTP 400."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def parse(model: type[M], raw: Any, *, prefix: str) -> M:
    """Validate `raw` as `model`; the first problem becomes a `ConfigError` naming its field."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problem = most_specific(error)
        field = field_path(prefix, problem["loc"])
        if problem["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, problem["loc"][:-1]))
            raise ConfigError(field, f"unknown key (allowed: {allowed})") from None
        raise ConfigError(field, problem["msg"]) from None


def most_specific(error: ValidationError) -> Any:
    """Of a union's alternative complaints, the one that went deepest says what is really wrong."""
    return max(error.errors(), key=lambda e: (len(e["loc"]), e["type"] == "extra_forbidden"))


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys allowed at `loc` inside `model` (walking list items, dict values and optionals)."""
    current: Any = model
    for part in loc:
        if isinstance(part, str) and _is_model(current) and part in current.model_fields:
            current = current.model_fields[part].annotation
        current = _inner_model(current) or current
    inner = current if _is_model(current) else _inner_model(current)
    return list(inner.model_fields) if inner else []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _inner_model(tp: Any) -> type[BaseModel] | None:
    for arg in get_args(tp):
        found = arg if _is_model(arg) else _inner_model(arg)
        if found:
            return found
    return None


_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def field_path(prefix: str, loc: Sequence[Any]) -> str:
    # pydantic puts union member tags ("str", "ProposerEntry", "list[...]") into the location
    parts = [p for p in loc if isinstance(p, int) or not (p[:1].isupper() or p in _TAGS or "[" in p)]
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def json_type(value: Any) -> str:
    """A value's type as a JSON client wrote it (`null`, not `NoneType`)."""
    names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    return names.get(type(value), type(value).__name__)
