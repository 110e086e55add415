"""Request shapes several test files send: a bundled arithmetic question the simulator knows, and
a tool-using conversation (the simulator calls `get_weather` when the user names it)."""

from __future__ import annotations

from typing import Any

BAKER = [{"role": "user", "content": "A baker has 12 trays of 8 rolls and sells 30. How many rolls are left?"}]
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER = [{"role": "user", "content": "use get_weather for Paris"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
AFTER_TOOL_RESULTS = [*WEATHER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees"}]
