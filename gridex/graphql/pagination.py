"""Cursor pagination over the services' pages: a cursor is an opaque position in the same
ordered list REST pages through, so both read the same rows in the same order."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import strawberry
from pydantic import BaseModel

from gridex.core.errors import ValidationFailed
from gridex.core.pagination import MAX_PER_PAGE, Page, PageParams
from gridex.graphql.types import from_model

T = TypeVar("T")
DEFAULT_FIRST = 20
_PREFIX = "gridex:"


class Window(PageParams):
    """``first`` rows after position ``start``: what a service pages with."""

    start: int = 0

    @property
    def offset(self) -> int:
        return self.start


def cursor_of(position: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{position}".encode()).decode()


def window(first: int | None, after: str | None) -> Window:
    size = DEFAULT_FIRST if first is None else first
    if not 1 <= size <= MAX_PER_PAGE:
        raise ValidationFailed(f"first must be between 1 and {MAX_PER_PAGE}")
    start = 0
    if after is not None:
        try:
            text = base64.urlsafe_b64decode(after.encode()).decode()
            if not text.startswith(_PREFIX):
                raise ValueError(text)
            start = int(text[len(_PREFIX) :]) + 1
        except ValueError as exc:
            raise ValidationFailed("after is not a cursor this API gave out") from exc
    return Window(page=1, per_page=size, start=start)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    total_count: int


def connection(
    page: Page[Any], at: Window, convert: Callable[[BaseModel], Any] = from_model
) -> Connection[Any]:
    edges = [
        Edge(cursor=cursor_of(at.start + i), node=convert(item))
        for i, item in enumerate(page.items)
    ]
    end = at.start + len(edges)
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=end < page.total, end_cursor=edges[-1].cursor if edges else None
        ),
        total_count=page.total,
    )
