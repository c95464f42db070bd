"""GraphQL object types made from the REST API's response models, so that each object has one
definition: a field of ``OrderOut`` is a field of ``Order``, with the same meaning and the same
representation (money as the API's 6-decimal string, energy in kWh, times ISO 8601 UTC with
``Z``), named in camelCase.

:func:`object_type` turns a Pydantic model into a Strawberry type (its nested models too);
:func:`from_model` turns a model instance into that type's instance through the model's own JSON
serialisation, so every value reads exactly as the REST API writes it.
"""

from __future__ import annotations

import enum
import types
import typing
import uuid
from datetime import date, datetime
from typing import Annotated, Any, NewType, Optional, TypeVar, Union

import strawberry
from pydantic import BaseModel, PlainSerializer
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition

# Times as the REST API writes them: ISO 8601 UTC with `Z` (values are already that string).
DateTime = NewType("DateTime", str)
SCALARS: dict[object, ScalarDefinition] = {
    DateTime: strawberry.scalar(
        name="DateTime",
        description="ISO 8601 UTC time with Z, e.g. 2026-01-01T12:00:00Z",
        serialize=str,
        parse_value=str,
    )
}

_TYPES: dict[type[BaseModel], Any] = {}
_ENUMS: dict[type[enum.Enum], Any] = {}
M = TypeVar("M", bound=BaseModel)


def _name(model: type[BaseModel]) -> str:
    name = model.__name__
    return name[: -len("Out")] if name.endswith("Out") and len(name) > 3 else name


def _serialised_as(metadata: list[Any]) -> Any:
    """The type a field's ``PlainSerializer`` turns it into (Money -> str, Kwh -> float)."""
    for item in metadata:
        if isinstance(item, PlainSerializer) and item.return_type not in (None, Any):
            return item.return_type
    return None


def _graph(annotation: Any, metadata: list[Any] | None = None) -> Any:
    """The GraphQL type of a model field's annotation."""
    serialised = _serialised_as(metadata or [])
    if serialised is str:
        return DateTime if annotation is datetime else str
    if serialised is not None:
        return serialised
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _graph(args[0], list(args[1:]))
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        inner = _graph(present[0]) if len(present) == 1 else JSON
        return Optional[inner] if len(present) < len(args) else inner  # noqa: UP045
    if origin is list:
        return list[_graph(args[0])]  # type: ignore[misc]
    if origin is dict or annotation is dict:
        return JSON
    if origin is typing.Literal:
        return str
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return object_type(annotation)
        if issubclass(annotation, enum.Enum):
            if annotation not in _ENUMS:
                _ENUMS[annotation] = strawberry.enum(annotation)
            return _ENUMS[annotation]
        if issubclass(annotation, datetime):
            return DateTime
        if issubclass(annotation, date):
            return str
        if issubclass(annotation, uuid.UUID):
            return strawberry.ID
        if issubclass(annotation, (bool, int, float, str)):
            return annotation
    return JSON


def object_type(model: type[BaseModel], extra: dict[str, Any] | None = None) -> Any:
    """The Strawberry type of ``model`` (made once), with ``extra`` fields (resolvers) that
    the model does not have, such as a meter's readings."""
    found = _TYPES.get(model)
    if found is not None:
        return found
    annotations = {
        name: _graph(field.annotation, list(field.metadata))
        for name, field in model.model_fields.items()
    }
    namespace: dict[str, Any] = {"__annotations__": annotations, "__module__": __name__}
    namespace.update(extra or {})
    made = strawberry.type(
        type(_name(model), (), namespace), description=(model.__doc__ or "").strip() or None
    )
    _TYPES[model] = made
    return made


def _value(annotation: Any, value: Any) -> Any:
    """``value`` (as the model's JSON serialisation wrote it) as the GraphQL field wants it."""
    if value is None:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _value(args[0], value)
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        return _value(present[0], value) if len(present) == 1 else value
    if origin is list:
        return [_value(args[0], v) for v in value]
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return _instance(annotation, value)
        if issubclass(annotation, enum.Enum):
            return annotation(value)
    return value


def _instance(model: type[BaseModel], data: dict[str, Any]) -> Any:
    graph = object_type(model)
    return graph(
        **{name: _value(field.annotation, data[name]) for name, field in model.model_fields.items()}
    )


def from_model(item: BaseModel) -> Any:
    """The GraphQL instance of a response model instance."""
    return _instance(type(item), item.model_dump(mode="json"))
