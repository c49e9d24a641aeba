"""The codec: exact round trips (in memory and through JSONB), clear refusals, signed pickles."""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import enum
import json
import math
import pickle
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.db import connection
from django.test import override_settings
from django.utils.safestring import mark_safe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_pq.codec import (
    TAG,
    decode_payload,
    decode_value,
    encode_payload,
    encode_value,
)
from django_pq.exceptions import PayloadError, TaskRefused, UnserializableArgument


@dataclasses.dataclass
class Point:
    """Module-level, so pickle can find it by name."""

    x: int
    y: int


UNPICKLED: list[str] = []


def _record_unpickling(marker: str) -> str:
    UNPICKLED.append(marker)
    return marker


class Boom:
    """Unpickling this runs code: a forged pickle must never get that far."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("unpickled",)


class Colour(enum.IntEnum):
    RED = 1


class OddZone(dt.tzinfo):
    """A tzinfo that is neither ZoneInfo nor datetime.timezone (like pytz's or dateutil's)."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)


# --- comparing values exactly ------------------------------------------------------------


def _same_tz(a: dt.tzinfo | None, b: dt.tzinfo | None) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, ZoneInfo):
        return a is b
    if isinstance(a, dt.timezone):
        assert isinstance(b, dt.timezone)
        return a.utcoffset(None) == b.utcoffset(None) and a.tzname(None) == b.tzname(None)
    return a is None


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down; nan equals nan and -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal):
        # str() is exact (sign, exponent, NaN kind); comparing a signalling NaN would raise.
        return str(a) == str(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(ka, kb) and same(va, vb) for kb, vb in b.items()) for ka, va in a.items()
        )
    if isinstance(a, dt.datetime | dt.time):
        # Comparing naive wall times ignores fold, so it is checked on its own.
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and _same_tz(a.tzinfo, b.tzinfo)
        )
    return bool(a == b)


def test_same_sees_differences() -> None:
    # The property tests are only as strong as this helper.
    assert not same(1, True)
    assert not same(0.0, -0.0)
    assert not same((1,), [1])
    assert not same({1: "a"}, {1.0: "a"})
    assert not same(Decimal("1E+2"), Decimal("100"))
    naive = dt.datetime(2021, 11, 7, 1, 30)
    assert not same(naive, naive.replace(fold=1))
    assert not same(naive.replace(tzinfo=dt.UTC), naive.replace(tzinfo=ZoneInfo("UTC")))
    named = dt.timezone(dt.timedelta(hours=1), "CET")
    assert not same(
        naive.replace(tzinfo=named), naive.replace(tzinfo=dt.timezone(named.utcoffset(None)))
    )
    assert same(float("nan"), float("nan"))


# --- strategies --------------------------------------------------------------------------

# NUL (JSONB refuses it), surrogates (UTF-8 refuses them) and the tag key's characters.
_awkward_chars = st.sampled_from(["\x00", "\ud800", "\udc00", "\ud83d", "\ude00", "_", "p", "q"])
texts = st.text(alphabet=st.characters() | _awkward_chars, max_size=12) | st.sampled_from(
    [TAG, "", "\x00", "\ud83d\ude00"]
)
fixed_offsets = st.builds(
    dt.timezone,
    st.timedeltas(
        min_value=dt.timedelta(hours=-23, minutes=-59, microseconds=-999_999),
        max_value=dt.timedelta(hours=23, minutes=59, microseconds=999_999),
    ),
) | st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-12), max_value=dt.timedelta(hours=12)),
    st.text(max_size=5),
)
tzinfos = st.none() | st.timezones() | fixed_offsets | st.just(dt.UTC)
datetimes = st.builds(
    lambda when, fold: when.replace(fold=fold),
    st.datetimes(timezones=tzinfos),
    st.sampled_from([0, 1]),
)
times = st.builds(
    lambda when, fold: when.replace(fold=fold), st.times(timezones=tzinfos), st.sampled_from([0, 1])
)

# Keys and set members must hash and compare equal after a round trip: no NaNs.
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers() | st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False),
    texts,
    st.binary(max_size=8),
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
)
leaves = (
    hashable_leaves
    | st.floats()
    | st.decimals()
    | st.sampled_from([float("nan"), math.inf, -math.inf, -0.0, 1e300, 1e-7, 2.5e-308, 5e-324])
)
hashables = st.recursive(
    hashable_leaves,
    lambda children: (
        st.lists(children, max_size=3).map(tuple) | st.frozensets(children, max_size=3)
    ),
    max_leaves=6,
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(texts, children, max_size=4),
        st.dictionaries(hashables, children, max_size=3),
        st.sets(hashables, max_size=3),
        st.frozensets(hashables, max_size=3),
    ),
    max_leaves=20,
)


# --- round trips -------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(values)
def test_round_trip_through_json(value: Any) -> None:
    encoded = encode_value(value)
    # allow_nan=False: nothing JSON cannot spell (nan, inf) may reach the database.
    text = json.dumps(encoded, allow_nan=False)
    assert "\\u0000" not in text
    decoded = decode_value(json.loads(text))
    assert same(decoded, value), (value, encoded, decoded)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, None),
        (True, True),
        (12, 12),
        (1.5, 1.5),
        ("text", "text"),
        ([1, "a"], [1, "a"]),
        ({"a": [1]}, {"a": [1]}),
    ],
)
def test_common_values_stay_plain_json(value: Any, encoded: Any) -> None:
    assert same(encode_value(value), encoded)


def test_bool_stays_bool() -> None:
    assert decode_value(encode_value(True)) is True
    assert same(decode_value(encode_value({1: True, False: 0})), {1: True, False: 0})
    assert same(decode_value(encode_value([0, False])), [0, False])


def test_dict_holding_the_tag_key_round_trips() -> None:
    value = {TAG: "tuple", "v": [1, 2]}
    encoded = encode_value(value)
    assert encoded[TAG] == "dict"
    assert same(decode_value(encoded), value)


def _through_jsonb(encoded: Any, *, ensure_ascii: bool = True) -> Any:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb", [json.dumps(encoded, ensure_ascii=ensure_ascii)])
        (stored,) = cursor.fetchone()
    # Django's psycopg 3 backend hands jsonb back as text; plain psycopg would parse it.
    return json.loads(stored) if isinstance(stored, str) else stored


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        "a\x00b",
        {"key\x00": "\x00"},
        "\ud800",
        1e300,
        1e-7,
        -0.0,
        [0.0, -0.0, 1.0, 0.1],
        float("inf"),
        2**64,
        -(2**63) - 1,
        2**63 - 1,
        10**5000,
        Decimal("1E+2"),
        Decimal("-0"),
        Decimal("NaN"),
        Decimal("0.00000000000000000001"),
        dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        dt.time(23, 59, 59, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT")),
        {(1, 2): {uuid.UUID(int=7): b"\x00"}},
    ],
    ids=lambda value: type(value).__name__,
)
def test_round_trip_through_jsonb(value: Any) -> None:
    assert same(decode_value(_through_jsonb(encode_value(value))), value)


@pytest.mark.django_db
def test_float_with_exponent_is_what_jsonb_would_change() -> None:
    # Why 1e300 is tagged: numeric prints it as an integer literal, so it would come back an int.
    assert type(_through_jsonb(1e300)) is int


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values, ensure_ascii=st.booleans())
def test_round_trip_through_jsonb_property(value: Any, ensure_ascii: bool) -> None:
    stored = _through_jsonb(encode_value(value), ensure_ascii=ensure_ascii)
    assert same(decode_value(stored), value)


@pytest.mark.django_db
def test_payload_round_trips_through_jsonb() -> None:
    args = (1, (2, 3), {4})
    kwargs = {"when": dt.date(2024, 2, 29), TAG: "not a tag here", "blob": b"\xff"}
    stored = _through_jsonb(encode_payload(args, kwargs))
    decoded_args, decoded_kwargs = decode_payload(stored)
    assert same(decoded_args, args)
    assert same(decoded_kwargs, kwargs)


def test_encode_payload_shape() -> None:
    assert encode_payload((1, (2,)), {"a": None}) == {
        "args": [1, {TAG: "tuple", "v": [2]}],
        "kwargs": {"a": None},
    }


# --- refusals ----------------------------------------------------------------------------


def test_a_refusal_is_a_type_error_as_django_tasks_raises_and_a_task_refused() -> None:
    with pytest.raises(TypeError) as caught:
        encode_payload((1, object()), {})
    assert isinstance(caught.value, TaskRefused)
    assert isinstance(caught.value, ValueError)  # what TaskRefused always was
    assert str(caught.value).startswith("positional argument 2 is an object,")


def test_model_instance_is_refused_with_a_pk_hint() -> None:
    with pytest.raises(UnserializableArgument) as caught:
        encode_payload((), {"owner": User(username="x")})
    message = str(caught.value)
    assert "argument 'owner'" in message
    assert "django.contrib.auth.models.User" in message
    assert "pass user.pk and load it in the task" in message


def test_nested_refusal_names_the_path() -> None:
    with pytest.raises(UnserializableArgument) as caught:
        encode_payload((), {"order": {"items": [1, 2, object()]}})
    message = str(caught.value)
    assert message.startswith("argument 'order' (at ['items'][2]) is an object,")
    assert "PQ_PICKLE" in message


def test_positional_arguments_are_numbered_from_one() -> None:
    with pytest.raises(UnserializableArgument, match=r"^positional argument 2 \(at \[0\]\)"):
        encode_payload((1, (object(),)), {})


def test_refusal_names_a_dict_key_and_a_set_member() -> None:
    with pytest.raises(UnserializableArgument, match=r"^value \(at \['a'\]<key>\)"):
        encode_value({"a": {object(): 1}})
    with pytest.raises(UnserializableArgument, match=r"^result \(at <item>\)"):
        encode_value({frozenset()} | {Colour.RED}, where="result")


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (Colour.RED, "pass its .value instead"),
        (collections.OrderedDict(a=1), "convert it with dict(...)"),
        (mark_safe("<b>"), "convert it with str(...)"),
        (bytearray(b"x"), "convert it to None, bool, int"),
        (dt.datetime(2024, 1, 1, tzinfo=OddZone()), "use a zoneinfo.ZoneInfo"),
    ],
    ids=["enum", "dict subclass", "str subclass", "other type", "foreign tzinfo"],
)
def test_unsupported_types_are_refused_with_a_hint(value: Any, hint: str) -> None:
    with pytest.raises(UnserializableArgument) as caught:
        encode_value(value, where="argument 'x'")
    assert str(caught.value).startswith("argument 'x' is ")
    assert hint in str(caught.value)


def test_reference_cycle_is_refused() -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises(UnserializableArgument, match="contains itself"):
        encode_value(looped)


def test_shared_but_acyclic_containers_are_fine() -> None:
    shared = [1]
    assert same(decode_value(encode_value([shared, shared])), [[1], [1]])


def test_deep_nesting_is_refused_not_crashing() -> None:
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(UnserializableArgument, match="nested too deeply"):
        encode_value(nested)
    data: Any = []
    for _ in range(100_000):
        data = [data]
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode_value(data)


@pytest.mark.parametrize("name", ["a\x00", "\ud800", 1])
def test_unstorable_keyword_names_are_refused(name: Any) -> None:
    with pytest.raises(UnserializableArgument, match="Keyword argument name"):
        encode_payload((), {name: 1})


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "args",
        {},
        {"args": []},
        {"kwargs": {}},
        {"args": [], "kwargs": {}, "extra": 1},
        {"args": {}, "kwargs": {}},
        {"args": (), "kwargs": {}},
        {"args": [], "kwargs": []},
        {"args": [], "kwargs": {1: 2}},
        {"args": [{TAG: "nope", "v": 1}], "kwargs": {}},
    ],
    ids=repr,
)
def test_malformed_payloads_are_refused(payload: Any) -> None:
    with pytest.raises(PayloadError):
        decode_payload(payload)


@pytest.mark.parametrize(
    "data",
    [
        {TAG: "nope", "v": 1},
        {TAG: 1, "v": 1},
        {TAG: "tuple"},
        {TAG: "tuple", "v": [], "extra": 1},
        {TAG: "tuple", "v": "12"},
        {TAG: "int", "v": "zz"},
        {TAG: "int", "v": 12},
        {TAG: "float", "v": 1.5},
        {TAG: "float", "v": "fast"},
        {TAG: "decimal", "v": "abc"},
        {TAG: "uuid", "v": "abc"},
        {TAG: "bytes", "v": "!!"},
        {TAG: "str", "v": "/w=="},
        {TAG: "set", "v": [[1]]},
        {TAG: "dict", "v": [[1]]},
        {TAG: "dict", "v": [[[1], 2]]},
        {TAG: "timedelta", "v": [1, 2]},
        {TAG: "timedelta", "v": [1, 2, "3"]},
        {TAG: "date", "v": "2024-02-30"},
        {TAG: "datetime", "v": "yesterday"},
        {TAG: "datetime", "v": "2024-01-01T00:00:00+01:00"},
        {TAG: "datetime", "v": "2024-01-01T00:00:00", "fold": 2},
        {TAG: "datetime", "v": "2024-01-01T00:00:00", "zone": "Nowhere/Atlantis"},
        {TAG: "datetime", "v": "2024-01-01T00:00:00", "offset": 86_400_000_000},
        {TAG: "time", "v": "12:00", "offset": True},
        {TAG: "pickle", "v": "x"},
        (1, 2),
        {"a": {1, 2}},
        b"bytes",
    ],
    ids=repr,
)
def test_malformed_values_are_refused(data: Any) -> None:
    with pytest.raises(PayloadError):
        decode_value(data)


# --- opt-in pickling ---------------------------------------------------------------------


def test_pickle_off_refuses_to_encode_and_says_how_to_enable() -> None:
    with pytest.raises(UnserializableArgument, match="PQ_PICKLE"):
        encode_payload((Point(1, 2),), {})


@override_settings(PQ_PICKLE=True)
def test_pickle_round_trip() -> None:
    value = {"points": [Point(1, 2)], "plain": (1, 2)}
    encoded = encode_value(value)
    assert encoded["plain"] == {TAG: "tuple", "v": [1, 2]}  # only what JSON cannot carry
    assert encoded["points"][0][TAG] == "pickle"
    assert decode_value(json.loads(json.dumps(encoded))) == value


@override_settings(PQ_PICKLE=True)
def test_pickle_covers_refused_types_too() -> None:
    value = [Colour.RED, collections.OrderedDict(a=1)]
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert [type(item) for item in decoded] == [Colour, collections.OrderedDict]


@override_settings(PQ_PICKLE=True)
def test_unpicklable_value_is_refused_even_with_pickle_on() -> None:
    with pytest.raises(UnserializableArgument, match="could not be pickled"):
        encode_payload((), {"callback": lambda: None})


def test_pickle_is_not_decoded_when_pickle_is_off() -> None:
    with override_settings(PQ_PICKLE=True):
        encoded = encode_value(Point(1, 2))
    with pytest.raises(PayloadError, match="PQ_PICKLE is off"):
        decode_value(encoded)


def _tampered(signed: str) -> str:
    payload, signature = signed.rsplit(":", 1)
    flipped = "A" if payload[-5] != "A" else "B"
    return f"{payload[:-5]}{flipped}{payload[-4:]}:{signature}"


@override_settings(PQ_PICKLE=True)
def test_tampered_pickle_is_refused() -> None:
    encoded = encode_value(Point(1, 2))
    with pytest.raises(PayloadError, match="signature"):
        decode_value({TAG: "pickle", "v": _tampered(encoded["v"])})


@pytest.mark.parametrize(
    "signer",
    [
        signing.Signer(key="some other key", salt="django_pq.codec.pickle"),
        signing.Signer(salt="some other salt"),
    ],
    ids=["other key", "other salt"],
)
def test_forged_pickle_is_never_unpickled(signer: signing.Signer) -> None:
    forged = base64.urlsafe_b64encode(pickle.dumps(Boom())).decode("ascii")
    UNPICKLED.clear()
    with override_settings(PQ_PICKLE=True):
        for unverified in (signer.sign(forged), forged):
            with pytest.raises(PayloadError, match="signature"):
                decode_value({TAG: "pickle", "v": unverified})
    assert UNPICKLED == []


@override_settings(PQ_PICKLE=True)
def test_pickle_signature_depends_on_secret_key() -> None:
    encoded = encode_value(Point(1, 2))
    with override_settings(SECRET_KEY="rotated"), pytest.raises(PayloadError, match="signature"):
        decode_value(encoded)
