"""Verdicts as componentize-py can hand them to the host, or a VerdictError saying what is wrong.

componentize-py takes exactly `bytes` for a `list<u8>`, a `list` for a list, a `tuple` for a
tuple and a `str` for a string; anything else makes its runtime panic with no line number. The
SDK's helpers (hyperfilter.py) and the check of each hook's returned verdict go through the
functions here, which accept what Python code naturally gives (bytearray, any sequence, a dict
of headers) and refuse the rest with a message naming the part and the type to give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from wit_world.imports import types

Fields = list[tuple[str, bytes]]
U16_MAX = 0xFFFF
SHOWN = 40  # characters of a refused value shown in the message
T = TypeVar("T")

TCP_VERDICTS = (types.TcpVerdict_Forward, types.TcpVerdict_Close, types.TcpVerdict_Reset)
TCP_VERDICTS_WITH_DATA = (types.TcpVerdict_Replace, types.TcpVerdict_Answer,
                          types.TcpVerdict_AnswerAndClose)


class VerdictError(TypeError):
    """A verdict, or a part of one, that the world cannot carry."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


def as_bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    hint = " (str.encode() makes them)" if isinstance(value, str) else ""
    raise VerdictError(f"{what} is {type(value).__name__}: give bytes{hint}")


def as_name(value: object, what: str) -> str:
    if type(value) is str:
        return value
    hint = " (bytes.decode() makes one)" if isinstance(value, bytes) else ""
    raise VerdictError(f"{what} is {type(value).__name__}: give a str{hint}")


def as_names(value: object, what: str) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise VerdictError(f"{what} is {type(value).__name__}: give a list of header names")
    return [as_name(name, f"{what} entry {_shown(name)}") for name in value]


def as_fields(value: object, what: str) -> Fields:
    """Header or trailer fields from a list of (name, value) pairs or a dict."""
    if isinstance(value, Mapping):
        value = value.items()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise VerdictError(f"{what} is {type(value).__name__}: give a list of (name, value) "
                           f"pairs")
    fields = []
    for pair in value:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise VerdictError(f"{what} has {_shown(pair)}: give (name, value) pairs")
        name = as_name(pair[0], f"{what} name {_shown(pair[0])}")
        fields.append((name, as_bytes(pair[1], f"{what} value of {name!r}")))
    return fields


def mutation(set_headers: object, remove_headers: object, body: object) -> types.Mutation:
    return types.Mutation(as_fields(set_headers, "set_headers"),
                          as_names(remove_headers, "remove_headers"),
                          None if body is None else as_bytes(body, "body"))


def immediate_response(status: object, headers: object, body: object) -> types.ImmediateResponse:
    if type(status) is not int or not 0 <= status <= U16_MAX:
        raise VerdictError(f"status {_shown(status)} is not an HTTP status: give an int such "
                           f"as 403")
    return types.ImmediateResponse(status, as_fields(headers, "headers"), as_bytes(body, "body"))


def _returned(value: object, kind: str, example: str) -> VerdictError:
    if value is None:
        return VerdictError(f"None: return a verdict such as {example}")
    return VerdictError(f"{type(value).__name__}: return {kind} verdict such as {example}")


def _whose(check: Callable[[], T]) -> T:
    try:
        return check()
    except VerdictError as error:
        raise VerdictError(f"a verdict whose {error}") from None


def tcp_verdict(value: object) -> types.TcpVerdict:
    """A TCP hook's returned verdict, checked; the message follows "<hook> returned "."""
    if isinstance(value, TCP_VERDICTS):
        return value
    if isinstance(value, TCP_VERDICTS_WITH_DATA):
        return _whose(lambda: type(value)(as_bytes(value.value, "data")))
    raise _returned(value, "a TCP", "forward()")


def http_verdict(value: object) -> types.HttpVerdict:
    """An HTTP hook's returned verdict, checked; the message follows "<hook> returned "."""
    if isinstance(value, types.HttpVerdict_Forward) and isinstance(value.value, types.Mutation):
        change = value.value
        return _whose(lambda: types.HttpVerdict_Forward(
            mutation(change.set_headers, change.remove_headers, change.body)))
    if (isinstance(value, types.HttpVerdict_Respond)
            and isinstance(value.value, types.ImmediateResponse)):
        answer = value.value
        return _whose(lambda: types.HttpVerdict_Respond(
            immediate_response(answer.status, answer.headers, answer.body)))
    raise _returned(value, "an HTTP", "forward_http()")


def nothing(value: object) -> None:
    """`on_close` returns nothing; whatever it returned is dropped."""
    return None
