"""Task arguments and results as JSON, with an exact round trip.

``decode_value(encode_value(x))`` gives back a value equal to ``x`` *and of the same types*,
nested containers included, for: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``list``, ``tuple``, ``dict``, ``set``, ``frozenset``, ``datetime``, ``date``, ``time``,
``timedelta``, ``Decimal`` and ``UUID``.

Most values stay plain JSON so that rows read well in the admin and in ``psql``. A value plain
JSON would lose travels as a tagged object, ``{"__pq__": "<kind>", "v": ...}``:

* tuples, sets, frozensets, bytes and the date and time types;
* floats that PostgreSQL's ``numeric`` (which backs JSONB numbers) would change: ``nan``,
  ``inf``, ``-0.0`` and anything whose ``repr`` has an exponent (``1e300`` comes back as an
  integer literal);
* ints outside the signed 64-bit range, kept as hex to stay clear of Python's limit on
  decimal int-to-str conversion;
* strings JSONB refuses (``"\\x00"``) or UTF-8 cannot carry (surrogates);
* dicts whose keys are not plain strings, or that contain the ``"__pq__"`` key themselves.

JSONB does not keep the order of an object's keys, so a plain dict (and a call's keyword
arguments) may come back with its keys in another order; it still compares equal.

Aware datetimes and times keep their exact tzinfo when it is a ``zoneinfo.ZoneInfo`` with a
key or a ``datetime.timezone`` (offset and name); ``fold`` is kept too.

Types are matched exactly, so subclasses are not encoded as their base type: an ``IntEnum``
is not an ``int``, an ``OrderedDict`` is not a ``dict``, Django's ``SafeString`` is not a
``str``. Turning them into the base type would hand the task something that behaves
differently (a ``SafeString`` turned ``str`` gets auto-escaped), and it would happen far from
the call, so they are refused at enqueue time with a message saying what to pass instead.
``bool`` is its own type and stays ``bool``.

Values the JSON codec cannot carry are refused with :class:`UnserializableArgument`, unless
``PQ_PICKLE`` is on: then each such value (model instances and enums included) is pickled and
stored signed with a key derived from ``SECRET_KEY``. A pickle is only ever unpickled after its
signature verifies, and only while ``PQ_PICKLE`` is on.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import math
import pickle
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core import signing
from django.db.models import Model

from django_pq.conf import pq_settings
from django_pq.exceptions import PayloadError, UnserializableArgument

TAG = "__pq__"
"""The one key that marks a JSON object as a tagged value."""

_PICKLE_SALT = "django_pq.codec.pickle"
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, datetime, date, "
    "time, timedelta, Decimal or UUID"
)
_PICKLE_HINT = "or set PQ_PICKLE = True to send it pickled"


def _type_name(kind: type) -> str:
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _a(kind: type) -> str:
    name = _type_name(kind)
    return f"an {name}" if name[0].lower() in "aeiou" else f"a {name}"


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_plain_str(text: str) -> bool:
    # JSONB refuses NUL, and a surrogate is not valid UTF-8 (json.dumps would also pair two
    # of them up into one character on the way back).
    return "\x00" not in text and not any("\ud800" <= char <= "\udfff" for char in text)


def _sign_pickle(value: Any) -> str:
    data = base64.urlsafe_b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return signing.Signer(salt=_PICKLE_SALT).sign(data.decode("ascii"))


class _Encoder:
    """One encode_value call: where the value came from, and the path walked so far."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.path: list[str] = []
        self.open_containers: set[int] = set()

    def encode(self, value: Any) -> Any:
        encoder = _ENCODERS.get(type(value))
        if encoder is None:
            return self.unsupported(value)
        return encoder(self, value)

    def at(self, segment: str, value: Any) -> Any:
        self.path.append(segment)
        try:
            return self.encode(value)
        finally:
            self.path.pop()

    def container(self, value: Any, encode_items: Callable[[], Any]) -> Any:
        # Without this a list that contains itself would end in RecursionError.
        if id(value) in self.open_containers:
            raise self.refusal(value, "contains itself", "break the reference cycle")
        self.open_containers.add(id(value))
        try:
            return encode_items()
        finally:
            self.open_containers.discard(id(value))

    def unsupported(self, value: Any, problem: str | None = None, hint: str | None = None) -> Any:
        if pq_settings.PICKLE:
            try:
                return {TAG: "pickle", "v": _sign_pickle(value)}
            except Exception as exc:
                raise self.refusal(
                    value, problem, f"it could not be pickled either ({exc})"
                ) from exc
        if hint is None:
            hint = _hint(value)
        raise self.refusal(value, problem, hint)

    def refusal(self, value: Any, problem: str | None, hint: str) -> UnserializableArgument:
        location = f"{self.where} (at {''.join(self.path)})" if self.path else self.where
        problem = problem or f"is {_a(type(value))}"
        return UnserializableArgument(
            f"{location} {problem}, which cannot be encoded as JSON; {hint}"
        )


def _hint(value: Any) -> str:
    if isinstance(value, Model):
        return f"pass {value._meta.model_name}.pk and load it in the task"
    if isinstance(value, enum.Enum):
        return f"pass its .value instead, {_PICKLE_HINT}"
    base = next((kind for kind in type(value).__mro__ if kind in _ENCODERS), None)
    if base is not None:
        return f"convert it with {base.__name__}(...), {_PICKLE_HINT}"
    return f"convert it to {_SUPPORTED}, {_PICKLE_HINT}"


def _encode_int(encoder: _Encoder, value: int) -> Any:
    if _INT_MIN <= value <= _INT_MAX:
        return value
    return {TAG: "int", "v": hex(value)}


def _encode_float(encoder: _Encoder, value: float) -> Any:
    text = repr(value)
    if math.isfinite(value) and "e" not in text and math.copysign(1.0, value) > 0:
        return value
    return {TAG: "float", "v": text}


def _encode_str(value: str) -> Any:
    if _is_plain_str(value):
        return value
    raw = value.encode("utf-8", "surrogatepass")
    return {TAG: "str", "v": base64.b64encode(raw).decode("ascii")}


def _encode_list(encoder: _Encoder, value: list[Any]) -> Any:
    return encoder.container(
        value, lambda: [encoder.at(f"[{index}]", item) for index, item in enumerate(value)]
    )


def _encoder_sequence(tag: str, segment: str) -> Callable[[_Encoder, Any], Any]:
    def encode(encoder: _Encoder, value: Any) -> Any:
        def items() -> list[Any]:
            return [encoder.at(segment.format(index), item) for index, item in enumerate(value)]

        return {TAG: tag, "v": encoder.container(value, items)}

    return encode


def _encode_dict(encoder: _Encoder, value: dict[Any, Any]) -> Any:
    def items() -> Any:
        if all(type(key) is str and key != TAG and _is_plain_str(key) for key in value):
            return {key: encoder.at(f"[{_short_repr(key)}]", item) for key, item in value.items()}
        pairs = [
            [encoder.at("<key>", key), encoder.at(f"[{_short_repr(key)}]", item)]
            for key, item in value.items()
        ]
        return {TAG: "dict", "v": pairs}

    return encoder.container(value, items)


def _encode_tz(value: dt.datetime | dt.time, fields: dict[str, Any]) -> dict[str, Any] | None:
    tz = value.tzinfo
    if value.fold:
        fields["fold"] = 1
    if tz is None:
        return fields
    if type(tz) is ZoneInfo and tz.key is not None:
        fields["zone"] = tz.key
        return fields
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        fields["offset"] = offset // dt.timedelta(microseconds=1)
        # An unnamed timezone names itself after its offset; only keep a name given to it.
        if tz.tzname(None) != dt.timezone(offset).tzname(None):
            fields["name"] = _encode_str(tz.tzname(None))
        return fields
    return None


def _encoder_clock(tag: str) -> Callable[[_Encoder, Any], Any]:
    def encode(encoder: _Encoder, value: dt.datetime | dt.time) -> Any:
        wall = value.replace(tzinfo=None, fold=0).isoformat()
        fields = _encode_tz(value, {TAG: tag, "v": wall})
        if fields is None:
            return encoder.unsupported(
                value,
                f"is a {tag} whose tzinfo is {_a(type(value.tzinfo))}",
                "use a zoneinfo.ZoneInfo or a datetime.timezone as tzinfo, " + _PICKLE_HINT,
            )
        return fields

    return encode


def _tagged(tag: str, convert: Callable[[Any], Any]) -> Callable[[_Encoder, Any], Any]:
    return lambda encoder, value: {TAG: tag, "v": convert(value)}


_ENCODERS: dict[type[Any], Callable[[_Encoder, Any], Any]] = {
    type(None): lambda encoder, value: None,
    bool: lambda encoder, value: value,
    int: _encode_int,
    float: _encode_float,
    str: lambda encoder, value: _encode_str(value),
    list: _encode_list,
    tuple: _encoder_sequence("tuple", "[{}]"),
    # Set members have no position to show.
    set: _encoder_sequence("set", "<item>"),
    frozenset: _encoder_sequence("frozenset", "<item>"),
    dict: _encode_dict,
    bytes: _tagged("bytes", lambda value: base64.b64encode(value).decode("ascii")),
    dt.datetime: _encoder_clock("datetime"),
    dt.time: _encoder_clock("time"),
    dt.date: _tagged("date", dt.date.isoformat),
    dt.timedelta: _tagged("timedelta", lambda td: [td.days, td.seconds, td.microseconds]),
    Decimal: _tagged("decimal", str),
    uuid.UUID: _tagged("uuid", str),
}


def encode_value(value: Any, *, where: str = "value") -> Any:
    """Encode ``value`` as JSON data (dicts, lists, str, int, float, bool, None) for JSONB.

    ``where`` names the value in error messages ("argument 'order'"). Raises
    :class:`UnserializableArgument` naming ``where`` and the path inside containers when a
    value cannot be encoded and ``PQ_PICKLE`` is off.
    """
    try:
        return _Encoder(where).encode(value)
    except RecursionError:
        raise UnserializableArgument(f"{where} is nested too deeply to be encoded") from None


def _field(obj: dict[str, Any], key: str, kind: type[Any]) -> Any:
    field = obj.get(key)
    if not isinstance(field, kind) or isinstance(field, bool):
        raise PayloadError(f"Malformed {obj[TAG]!r} value: {key!r} is missing or of wrong type")
    return field


def _b64(obj: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(_field(obj, "v", str), validate=True)
    except binascii.Error as exc:
        raise PayloadError(f"Malformed {obj[TAG]!r} value: not base64") from exc


def _decode_str(obj: dict[str, Any]) -> str:
    try:
        return _b64(obj).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise PayloadError("Malformed 'str' value: not UTF-8") from exc


def _decode_items(obj: dict[str, Any]) -> list[Any]:
    return [_decode(item) for item in _field(obj, "v", list)]


def _decode_dict(obj: dict[str, Any]) -> dict[Any, Any]:
    pairs = _field(obj, "v", list)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise PayloadError("Malformed 'dict' value: 'v' must be a list of [key, value] pairs")
    return {_decode(key): _decode(item) for key, item in pairs}


def _decode_tz(obj: dict[str, Any]) -> dt.tzinfo | None:
    if "zone" in obj:
        try:
            return ZoneInfo(_field(obj, "zone", str))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PayloadError(f"Unknown time zone {obj['zone']!r}") from exc
    if "offset" in obj:
        offset = dt.timedelta(microseconds=_field(obj, "offset", int))
        if "name" in obj:
            name = _decode(obj["name"])
            if type(name) is not str:
                raise PayloadError(f"Malformed {obj[TAG]!r} value: 'name' is not a string")
            return dt.timezone(offset, name)
        return dt.timezone(offset)
    return None


def _decoder_clock(kind: type[dt.datetime] | type[dt.time]) -> Callable[[dict[str, Any]], Any]:
    def decode(obj: dict[str, Any]) -> Any:
        fold = obj.get("fold", 0)
        if fold not in (0, 1) or isinstance(fold, bool):
            raise PayloadError(f"Malformed {obj[TAG]!r} value: bad 'fold'")
        wall = kind.fromisoformat(_field(obj, "v", str))
        if wall.tzinfo is not None:
            raise PayloadError(f"Malformed {obj[TAG]!r} value: offset inside 'v'")
        return wall.replace(tzinfo=_decode_tz(obj), fold=fold)

    return decode


def _decode_timedelta(obj: dict[str, Any]) -> dt.timedelta:
    parts = _field(obj, "v", list)
    if len(parts) != 3 or not all(type(part) is int for part in parts):
        raise PayloadError("Malformed 'timedelta' value: 'v' must be [days, seconds, us]")
    return dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])


def _decode_pickle(obj: dict[str, Any]) -> Any:
    if not pq_settings.PICKLE:
        raise PayloadError(
            "The payload holds a pickled value but PQ_PICKLE is off; refusing to unpickle it."
        )
    try:
        data = signing.Signer(salt=_PICKLE_SALT).unsign(_field(obj, "v", str))
    except signing.BadSignature as exc:
        raise PayloadError("A pickled value's signature does not verify; refusing it.") from exc
    try:
        return pickle.loads(base64.urlsafe_b64decode(data))
    except Exception as exc:
        raise PayloadError(f"A signed pickled value could not be unpickled: {exc!r}") from exc


# Each tag, the keys its object may have besides TAG ("v" is always required), its decoder.
_DECODERS: dict[str, tuple[frozenset[str], Callable[[dict[str, Any]], Any]]] = {
    "int": (frozenset(), lambda obj: int(_field(obj, "v", str), 16)),
    "float": (frozenset(), lambda obj: float(_field(obj, "v", str))),
    "str": (frozenset(), _decode_str),
    "tuple": (frozenset(), lambda obj: tuple(_decode_items(obj))),
    "set": (frozenset(), lambda obj: set(_decode_items(obj))),
    "frozenset": (frozenset(), lambda obj: frozenset(_decode_items(obj))),
    "dict": (frozenset(), _decode_dict),
    "bytes": (frozenset(), _b64),
    "datetime": (frozenset({"fold", "zone", "offset", "name"}), _decoder_clock(dt.datetime)),
    "time": (frozenset({"fold", "zone", "offset", "name"}), _decoder_clock(dt.time)),
    "date": (frozenset(), lambda obj: dt.date.fromisoformat(_field(obj, "v", str))),
    "timedelta": (frozenset(), _decode_timedelta),
    "decimal": (frozenset(), lambda obj: Decimal(_field(obj, "v", str))),
    "uuid": (frozenset(), lambda obj: uuid.UUID(_field(obj, "v", str))),
    "pickle": (frozenset(), _decode_pickle),
}


def _decode_tagged(obj: dict[str, Any]) -> Any:
    tag = obj[TAG]
    entry = _DECODERS.get(tag) if isinstance(tag, str) else None
    if entry is None:
        raise PayloadError(f"Unknown tag {tag!r} in payload")
    optional, decode = entry
    if "v" not in obj or not set(obj) <= optional | {TAG, "v"}:
        raise PayloadError(f"Malformed {tag!r} value: unexpected keys {sorted(obj)}")
    try:
        return decode(obj)
    except PayloadError:
        raise
    # Bad literals (int("zz", 16), Decimal("x"), ...) and unhashable set members or keys.
    except (ValueError, TypeError, OverflowError, InvalidOperation) as exc:
        raise PayloadError(f"Malformed {tag!r} value: {exc}") from exc


def _decode(data: Any) -> Any:
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [_decode(item) for item in data]
    if kind is dict:
        if TAG in data:
            return _decode_tagged(data)
        return {key: _decode(item) for key, item in data.items()}
    raise PayloadError(f"Payload holds {_a(kind)}, which is not JSON data")


def decode_value(data: Any) -> Any:
    """Turn JSON data made by :func:`encode_value` back into the original value.

    Raises :class:`PayloadError` when ``data`` is not something :func:`encode_value` makes,
    and for pickled values when ``PQ_PICKLE`` is off or the signature does not verify.
    """
    try:
        return _decode(data)
    except RecursionError:
        raise PayloadError("Payload is nested too deeply to be decoded") from None


def encode_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Encode a call's arguments as ``{"args": [...], "kwargs": {...}}``.

    Errors name the argument: "positional argument 1" (1-based) or "argument 'name'".
    """
    encoded_kwargs = {}
    for name, value in kwargs.items():
        if type(name) is not str or not _is_plain_str(name):
            raise UnserializableArgument(
                f"Keyword argument name {name!r} cannot be stored; use a plain string"
            )
        encoded_kwargs[name] = encode_value(value, where=f"argument {name!r}")
    return {
        "args": [
            encode_value(value, where=f"positional argument {position}")
            for position, value in enumerate(args, start=1)
        ],
        "kwargs": encoded_kwargs,
    }


def decode_payload(payload: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Turn a payload made by :func:`encode_payload` back into ``(args, kwargs)``.

    Raises :class:`PayloadError` for anything that is not exactly that shape.
    """
    if type(payload) is not dict or set(payload) != {"args", "kwargs"}:
        raise PayloadError("A payload must be a JSON object with exactly 'args' and 'kwargs'")
    args, kwargs = payload["args"], payload["kwargs"]
    if type(args) is not list:
        raise PayloadError("A payload's 'args' must be a JSON array")
    if type(kwargs) is not dict or not all(type(name) is str for name in kwargs):
        raise PayloadError("A payload's 'kwargs' must be a JSON object")
    return (
        tuple(decode_value(value) for value in args),
        {name: decode_value(value) for name, value in kwargs.items()},
    )
