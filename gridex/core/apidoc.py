"""The OpenAPI document as generators read it: request bodies that a route documents by hand
(``openapi_extra``) carry their sub-models in ``$defs``, which only resolve inside the schema
they came with; they are moved to ``components/schemas`` where every reference finds them."""

from __future__ import annotations

from typing import Any

_DEFS = "#/$defs/"
_COMPONENTS = "#/components/schemas/"


def hoist_defs(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every nested ``$defs`` moved to ``components/schemas`` (a model of the
    same name there wins: both come from the same class) and its references rewritten."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    found: dict[str, Any] = {}
    _collect(document.get("paths", {}), found)
    while found:  # a hoisted schema may itself have carried $defs
        for name, schema in found.items():
            schemas.setdefault(name, schema)
        found = {}
        _collect(schemas, found)
    return document


def _collect(node: Any, found: dict[str, Any]) -> None:
    if isinstance(node, dict):
        defs = node.pop("$defs", None)
        if isinstance(defs, dict):
            for name, schema in defs.items():
                _collect(schema, found)
                found.setdefault(name, schema)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS):
            node["$ref"] = _COMPONENTS + ref.removeprefix(_DEFS)
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect(value, found)
