"""JSON responses rendered with orjson, for bodies built outside response models."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any

import orjson
from starlette.responses import JSONResponse, StreamingResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def csv_download(name: str, chunks: Iterable[str] | AsyncIterable[str]) -> StreamingResponse:
    """A CSV streamed as a download named ``gridex-<name>.csv``."""
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="gridex-{name}.csv"'},
    )
