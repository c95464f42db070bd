"""GraphQL errors in the API's vocabulary: each carries ``extensions.code`` (the REST error
code: ``NOT_FOUND``, ``AUTHENTICATION_REQUIRED``, ``VALIDATION_ERROR``, ...), and an unexpected
failure says ``INTERNAL_ERROR`` without its internals, as REST's 500 does."""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import StreamExecutionResult

from gridex.core.errors import GridexError

log = structlog.get_logger(__name__)


def _with_code(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if original is None:
        # The document itself: a syntax error or a refused query (depth, cost, unknown field).
        extensions = {"code": "VALIDATION_ERROR"}
        message = error.message
    elif isinstance(original, GridexError):
        extensions = {"code": original.code}
        if original.details:
            extensions["details"] = original.details  # type: ignore[assignment]
        message = original.message
    else:
        log.error("graphql_resolver_failed", path=error.path, exc_info=original)
        extensions, message = {"code": "INTERNAL_ERROR"}, "Internal error"
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**(error.extensions or {}), **extensions},
    )


class ErrorCodes(SchemaExtension):
    def _rewrite(self) -> None:
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_with_code(e) for e in result.errors]
        errors = self.execution_context.pre_execution_errors
        if errors:
            self.execution_context.pre_execution_errors = [_with_code(e) for e in errors]

    def on_operation(self) -> Iterator[None]:
        yield
        self._rewrite()

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        """Each result of a subscription, as it is sent."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [_with_code(e) for e in errors]  # type: ignore[union-attr]
        yield
