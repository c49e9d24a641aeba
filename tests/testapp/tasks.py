"""Task functions used by the test suite."""

from __future__ import annotations


def add(a: int, b: int) -> int:
    return a + b


def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


def noop() -> None:
    return None


async def async_add(a: int, b: int) -> int:
    return a + b


class Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


def make_closure() -> object:
    def inner() -> None:
        return None

    return inner
