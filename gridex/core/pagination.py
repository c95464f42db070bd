"""The API's list envelope and page parameters."""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

MAX_PER_PAGE = 100
# Far past any real list, and small enough that no offset overflows a 64-bit integer.
MAX_PAGE = 1_000_000
T = TypeVar("T")


class PageParams(BaseModel):
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


async def page_params(
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20,
) -> PageParams:
    """A coroutine so that FastAPI does not send it to its thread pool."""
    return PageParams(page=page, per_page=per_page)


PageDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    per_page: int
    pages: int

    @classmethod
    def build(cls, items: list[T], total: int, params: PageParams) -> Page[T]:
        return cls(
            items=items,
            total=total,
            page=params.page,
            per_page=params.per_page,
            pages=math.ceil(total / params.per_page) if total else 0,
        )


async def paginate(
    session: AsyncSession, query: Select[Any], params: PageParams
) -> tuple[list[Any], int]:
    """Run one page of ``query`` and count all its rows."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.scalars(query.limit(params.per_page).offset(params.offset))
    return list(rows), int(total or 0)
