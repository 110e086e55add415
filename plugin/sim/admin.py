"""The `/sim/*` routes: what tests use to look inside the simulator and to reconfigure it live."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import ValidationError

from .profile import patched
from .protocol import RequestError
from .state import STATE


async def get_calls(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].calls)


async def clear_calls(request: web.Request) -> web.Response:
    request.app[STATE].calls.clear()
    return web.json_response({"cleared": True})


async def reset(request: web.Request) -> web.Response:
    """Back to a fresh simulator (log, call numbers, sample counters), keeping the current profile."""
    state = request.app[STATE]
    state.calls.clear()
    state.samples.clear()
    state.seq = 0
    return web.json_response({"reset": True})


async def get_profile(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].profile.model_dump(mode="json"))


async def patch_profile(request: web.Request) -> web.Response:
    """Merge `{"models": {name: {field: value}}}` into the profile, validated as a whole."""
    state = request.app[STATE]
    try:
        patch = json.loads(await request.read())
        if not isinstance(patch, dict):
            raise ValueError("the profile patch must be a JSON object")
        state.profile = patched(state.profile, patch)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        # models.<name>.<field>; deeper parts are pydantic's union tags, not fields
        param = ".".join(str(part) for part in (loc[:3] if loc[:1] == ("models",) else loc[:1]))
        return RequestError(400, f"Invalid profile field '{param}': {first['msg']}", param=param).response()
    except ValueError as exc:
        return RequestError(400, f"Invalid profile patch: {exc}").response()
    return web.json_response(state.profile.model_dump(mode="json"))


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/sim/calls", get_calls)
    app.router.add_delete("/sim/calls", clear_calls)
    app.router.add_post("/sim/reset", reset)
    app.router.add_get("/sim/profile", get_profile)
    app.router.add_post("/sim/profile", patch_profile)
