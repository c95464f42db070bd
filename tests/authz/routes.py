"""The app's operations as its OpenAPI document lists them, and concrete paths to call them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

_PARAM = re.compile(r"\{([^}]+)\}")
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # template, e.g. /api/v1/meters/{meter_id}
    secured: bool  # takes credentials (an access token or an API key)
    path_params: dict[str, dict[str, Any]]  # name -> JSON schema

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, values: dict[str, str] | None = None) -> str:
        """The path with each parameter taken from ``values``, else a well-formed stand-in."""
        given = values or {}
        return _PARAM.sub(
            lambda m: given.get(m.group(1)) or stand_in(self.path_params.get(m.group(1), {})),
            self.path,
        )


def stand_in(schema: dict[str, Any]) -> str:
    """A valid value of a path parameter that names nothing that exists."""
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "date-time":
        return "2026-03-04T12:00:00Z"
    return "zz-nothing-here"


def operations(app: FastAPI) -> list[Operation]:
    spec = app.openapi()
    found = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = {
                p["name"]: p.get("schema", {})
                for p in op.get("parameters", [])
                if p["in"] == "path"
            }
            found.append(Operation(method.upper(), path, bool(op.get("security")), params))
    return found
