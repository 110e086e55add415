"""Structured output (`response_format`) as a simulated model honours it.

`{"type": "text"}` (or none) leaves the reply as it is. `{"type": "json_object"}` makes it the JSON
object `{"answer": X}`; `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` makes it
a JSON value of the schema: an object with every `required` property, each of its type (string,
number, integer, boolean, array, object, null; an enum's or const's value; nested objects, `$ref`,
`anyOf` / `oneOf` / `allOf` followed). X, the reply's answer (a number as a JSON number), goes in the
first property that can hold it, an answer-named one (`answer`, `final_answer`, `result`, ...)
preferred: a string, a number or integer when the answer is one, an enum that lists it; an optional
property is added for it when no required one can. Other values are fixed: "" for strings, 0 (or
`minimum`) for numbers, false, [], {}, null.

The answer of a reply is its `Answer: X` value, a select reply's candidate number, a judge's winner.
Anything else is a 400 as OpenAI words it, naming the field (`response_format.type`, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from .answers import extract_answer, normalise_number
from .judge import WINNER_PATTERN
from .reading import Kind

FormatType = Literal["text", "json_object", "json_schema"]
FORMAT_TYPES: tuple[FormatType, ...] = ("text", "json_object", "json_schema")
ANSWER_KEYS = ("answer", "final_answer", "result", "value", "choice")
"""Property names that mark where an answer belongs, preferred in this order."""
MAX_DEPTH = 12
"""Nesting followed at most: a schema may be recursive (a tree of itself)."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BEST = re.compile(r"<best>\s*(\d+)\s*</best>")
_NO_FIT = object()
_DEFAULTS: dict[str, Any] = {"string": "", "boolean": False, "null": None}


class FormatError(ValueError):
    """A `response_format` a real server would refuse: the message, the field it names, the error code."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class OutputFormat:
    """What a reply's content must be: plain text, any JSON object, or a value of a JSON schema."""

    type: FormatType = "text"
    schema: Mapping[str, Any] | None = None

    @property
    def structured(self) -> bool:
        return self.type != "text"


def _missing(param: str) -> FormatError:
    return FormatError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _wrong_type(param: str, expected: str, got: Any) -> FormatError:
    return FormatError(f"Invalid type for '{param}': expected {expected}, but got {type(got).__name__} instead.",
                       param, "invalid_type")


def _schema_spec(spec: Any) -> Mapping[str, Any]:
    """The schema of a `json_schema` format, after checking its fields as OpenAI does."""
    base = "response_format.json_schema"
    if spec is None:
        raise _missing(base)
    if not isinstance(spec, Mapping):
        raise _wrong_type(base, "an object", spec)
    name = spec.get("name")
    if name is None:
        raise _missing(f"{base}.name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise FormatError(f"Invalid '{base}.name': {name!r}. Expected a string of letters, digits, '_' or '-', "
                          "at most 64 long.", f"{base}.name")
    if spec.get("strict") is not None and not isinstance(spec.get("strict"), bool):
        raise _wrong_type(f"{base}.strict", "a boolean", spec["strict"])
    schema = spec.get("schema")
    if schema is None:
        raise _missing(f"{base}.schema")
    if not isinstance(schema, Mapping):
        raise _wrong_type(f"{base}.schema", "an object", schema)
    return schema


def parse_format(raw: Mapping[str, Any] | None) -> OutputFormat:
    """A request's `response_format` as an OutputFormat; FormatError for one OpenAI would refuse."""
    if raw is None:
        return OutputFormat()
    kind = raw.get("type")
    if kind is None:
        raise _missing("response_format.type")
    if kind not in FORMAT_TYPES:
        raise FormatError(f"Invalid value for 'response_format.type': {json.dumps(kind)}. Supported values are: "
                          "'text', 'json_object', and 'json_schema'.", "response_format.type")
    if kind == "json_schema":
        return OutputFormat("json_schema", _schema_spec(raw.get("json_schema")))
    return OutputFormat(kind)


# --- the answer, as a JSON value ----------------------------------------------------------------

def reply_answer(kind: Kind, text: str) -> str | None:
    """What a reply answers: a select reply's candidate number, a judge's winner, else its `Answer: X`."""
    pattern = {"select": _BEST, "judge": WINNER_PATTERN}.get(kind)
    if pattern is not None:
        match = pattern.search(text)
        return match.group(1) if match else None
    return extract_answer(text)


def as_number(answer: str | None) -> int | float | None:
    """The answer as a JSON number (an int when whole), or None when it is not a number."""
    normal = normalise_number(answer) if answer else None
    if normal is None:
        return None
    value = Decimal(normal)
    return int(value) if value == value.to_integral_value() else float(value)


def answer_value(answer: str | None) -> Any:
    """The answer as the JSON value a model would write: a number when it is one, else the string."""
    number = as_number(answer)
    return answer if number is None else number


# --- walking a schema ---------------------------------------------------------------------------

def _without(spec: Mapping[str, Any], keyword: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != keyword}


def _follow_ref(spec: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """A local `$ref` ("#/$defs/Name") replaced by what it points to (a dangling one by nothing)."""
    ref = spec.get("$ref")
    if not (isinstance(ref, str) and ref.startswith("#")):
        return dict(spec)
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, Mapping) else None
    return {**(target if isinstance(target, Mapping) else {}), **_without(spec, "$ref")}


def _resolve(spec: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    """A schema with its local `$ref` followed, its first non-null `anyOf`/`oneOf` branch, its `allOf` merged."""
    if not isinstance(spec, Mapping):
        return {}
    resolved = _follow_ref(spec, root)
    for union in ("anyOf", "oneOf"):
        branches = [b for b in resolved.get(union) or [] if _resolve(b, root).get("type") != "null"]
        if branches:
            resolved = {**_resolve(branches[0], root), **_without(resolved, union)}
    if isinstance(resolved.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in resolved["allOf"]:
            merged.update(_resolve(part, root))
        resolved = {**merged, **_without(resolved, "allOf")}
    return resolved


def _type(spec: Mapping[str, Any]) -> str:
    """The JSON type a schema asks for: its `type` (the first non-null one), else what its keywords imply."""
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in spec or "required" in spec:
        return "object"
    return "array" if "items" in spec else "string"


def _keys(spec: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    """An object schema's properties and its required keys, in the order they are written."""
    properties = spec.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = spec.get("required")
    return properties, [k for k in required if isinstance(k, str)] if isinstance(required, list) else []


def _fit(spec: Mapping[str, Any], answer: str | None) -> Any:
    """The answer as a value of this schema, or _NO_FIT when the schema cannot hold it."""
    if answer is None or "const" in spec:
        return _NO_FIT
    enum = spec.get("enum")
    if isinstance(enum, list):
        wanted = {answer, str(answer_value(answer))}
        return next((value for value in enum if str(value) in wanted), _NO_FIT)
    kind, number = _type(spec), as_number(answer)
    if kind == "string":
        return answer
    if kind == "number" and number is not None:
        return number
    return number if kind == "integer" and isinstance(number, int) else _NO_FIT


@dataclass(frozen=True)
class _Slot:
    """A scalar property the answer could go in: where it is, and whether the schema requires it."""

    path: tuple[str, ...]
    spec: Mapping[str, Any]
    optional: bool


def _slots(spec: Any, root: Mapping[str, Any], path: tuple[str, ...] = (),
           optional: bool = False) -> Iterator[_Slot]:
    """Every scalar property, depth first in the order a reply writes them (required before optional)."""
    spec = _resolve(spec, root)
    if _type(spec) != "object":
        yield _Slot(path, spec, optional)
        return
    if len(path) >= MAX_DEPTH:
        return
    properties, required = _keys(spec)
    for key in [*required, *(k for k in properties if k not in required)]:
        yield from _slots(properties.get(key), root, (*path, key), optional or key not in required)


def _named(path: tuple[str, ...]) -> int:
    """How well a property's name says it holds the answer: its rank in ANSWER_KEYS, else last."""
    last = path[-1].lower() if path else ""
    return ANSWER_KEYS.index(last) if last in ANSWER_KEYS else len(ANSWER_KEYS) + ("answer" not in last)


def answer_slot(schema: Mapping[str, Any], answer: str | None) -> _Slot | None:
    """Where the answer goes: required before optional, then answer-named before the rest, then first."""
    fitting = [slot for slot in _slots(schema, schema) if _fit(slot.spec, answer) is not _NO_FIT]
    return min(fitting, key=lambda slot: (slot.optional, _named(slot.path)), default=None)


def _default(spec: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    """A fixed value of a schema that does not hold the answer."""
    if "const" in spec:
        return spec["const"]
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][0]
    kind = _type(spec)
    if kind in ("number", "integer"):
        low, above = spec.get("minimum"), spec.get("exclusiveMinimum")
        if isinstance(low, (int, float)):
            return low
        return above + 1 if isinstance(above, (int, float)) else 0
    if kind == "array":
        count = spec.get("minItems", 0)
        items = _resolve(spec.get("items"), root)
        return [_default(items, root, depth + 1) for _ in range(count if isinstance(count, int) else 0)]
    return _DEFAULTS.get(kind, "") if kind != "object" else {}


def _value(spec: Any, root: Mapping[str, Any], path: tuple[str, ...], slot: _Slot | None, answer: str | None) -> Any:
    """The value of a schema at `path`: the answer in its slot, required properties, defaults elsewhere."""
    spec = _resolve(spec, root)
    if slot is not None and slot.path == path:
        return _fit(spec, answer)
    if _type(spec) != "object" or len(path) >= MAX_DEPTH:
        return _default(spec, root, len(path))
    properties, keys = _keys(spec)
    if slot is not None and slot.path[: len(path)] == path and slot.path[len(path)] not in keys:
        keys = [*keys, slot.path[len(path)]]
    return {key: _value(properties.get(key), root, (*path, key), slot, answer) for key in keys}


def render(form: OutputFormat, answer: str | None) -> str:
    """A reply's content in the requested structured form, carrying `answer`."""
    if form.type == "json_object" or form.schema is None:
        return json.dumps({"answer": answer_value(answer)})
    schema = form.schema
    return json.dumps(_value(schema, schema, (), answer_slot(schema, answer), answer))
