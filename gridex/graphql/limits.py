"""What one GraphQL document may ask for: a depth limit and a cost limit, refused before any
resolver runs.

The cost counts the objects a query can return: each field costs 1, and a field with ``first``
(a connection, a series) multiplies what is below it by ``first`` (by the default page size
when absent, by the largest allowed when it is a variable). 100 meters with their last reading
cost about 1,500; the limit is 20,000.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)

from gridex.core.pagination import MAX_PER_PAGE
from gridex.graphql.pagination import DEFAULT_FIRST

MAX_DEPTH = 10
MAX_COST = 20_000


def _multiplier(field: FieldNode) -> int:
    for argument in field.arguments or ():
        if argument.name.value == "first":
            if isinstance(argument.value, IntValueNode):
                return max(1, int(argument.value.value))
            return MAX_PER_PAGE
    if field.name.value in ("meters", "orders", "trades", "epochs", "edges"):
        return DEFAULT_FIRST if field.name.value != "edges" else 1
    return 1


class CostLimit(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        cost = self._cost(node.selection_set, set())
        if cost > MAX_COST:
            self.report_error(
                GraphQLError(
                    f"The query may return about {cost:,} objects, more than {MAX_COST:,}: "
                    "ask for fewer (smaller `first`, fewer nested lists)",
                    node,
                )
            )

    def _cost(self, selection: SelectionSetNode | None, seen: set[str]) -> int:
        if selection is None:
            return 0
        total = 0
        for item in selection.selections:
            if isinstance(item, FieldNode):
                total += 1 + _multiplier(item) * self._cost(item.selection_set, seen)
            elif isinstance(item, InlineFragmentNode):
                total += self._cost(item.selection_set, seen)
            elif isinstance(item, FragmentSpreadNode) and item.name.value not in seen:
                fragment = self.context.get_fragment(item.name.value)
                if fragment is not None:
                    total += self._cost(fragment.selection_set, seen | {item.name.value})
        return total
