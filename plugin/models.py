"""`GET /v1/models`: the backend's own list, as it answered it, with each model's approach names
added (`self_moa-M`, ...) so that model pickers offer them (`list_approaches: false` turns that
off). Where the backend is reached through an SDK (LiteLLM, Azure, Cerebras), the list is the one
model optillm is configured with, as optillm's own route answers then."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from selfmoa.approaches import WireBackend
from selfmoa.approaches.classify import classify

from .config import SLUGS
from .http import bearer, error_from, error_response
from .service import Service

TIMEOUT = 30.0


async def models(request: Request) -> Response:
    service: Service = request.app.state.service
    backend = service.upstream.backend(bearer(request))
    if not isinstance(backend, WireBackend):
        listed: dict[str, Any] = {"object": "list", "data": [
            {"id": str(service.host.settings.get("model")), "object": "model", "created": 0, "owned_by": "optillm"}]}
    else:
        try:
            async with backend.get("/models", TIMEOUT) as response:
                raw = await response.read()
                status = response.status
        except Exception as error:
            return error_from(classify("/v1/models", error))
        if status >= 400:
            return Response(raw, status_code=status, media_type="application/json")
        try:
            listed = json.loads(raw)
        except ValueError:
            return error_response(502, "the backend's model list is not JSON")
    if service.runtime.config.list_approaches and isinstance(listed, dict):
        listed = with_approaches(listed)
    return JSONResponse(listed)


def with_approaches(listed: dict[str, Any]) -> dict[str, Any]:
    entries = [m for m in listed.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    known = {m["id"] for m in entries}
    extra = [{"id": f"{slug}-{m['id']}", "object": "model", "created": m.get("created") or 0, "owned_by": "selfmoa"}
             for m in entries for slug in SLUGS if f"{slug}-{m['id']}" not in known]
    return {**listed, "data": [*listed.get("data", []), *extra]}
