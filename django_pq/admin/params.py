"""Query strings the list pages cannot use: refused with 400, never a server error."""

from __future__ import annotations

from django.core.exceptions import BadRequest
from django.http import HttpRequest


def refuse_nul_characters(request: HttpRequest) -> None:
    """Raise :class:`BadRequest` (a 400 page) when a query parameter holds a NUL character.

    PostgreSQL text cannot contain NUL, so a filter or search value with one matches
    nothing and, sent to the database, fails the whole query.
    """
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            raise BadRequest(
                f"The query parameter {key!r} contains a NUL character, which no stored "
                "value can hold; remove it from the address."
            )
