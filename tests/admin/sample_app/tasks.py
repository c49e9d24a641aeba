"""A tasks module for the discovery tests: defined, imported, private and async names."""

from __future__ import annotations

from tests.testapp.tasks import add as imported_add  # noqa: F401  (imported, not defined here)


def defined_here(x: int) -> int:
    return x


async def defined_async() -> None:
    return None


def _private_helper() -> None:
    return None


not_a_function = 42
