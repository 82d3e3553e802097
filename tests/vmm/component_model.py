"""wasmtime's own component model as an oracle for the host's canonical ABI: a component
called through wasmtime-py's component API (which lifts and lowers everything itself), its
values made the host's events and verdicts. The tiers never run components this way: the
host links their core modules and lifts verdicts itself (vmm/wasmtime/linked.py)."""

from __future__ import annotations

from typing import Any

import wasmtime
import wasmtime.component as wc

from vmm.events import (
    Event,
    HttpBody,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
    Verdict,
)
from vmm.world import (
    DIRECTION,
    EXPORTS,
    HTTP_VERDICT_CASES,
    IMMEDIATE_RESPONSE_FIELDS,
    MUTATION_FIELDS,
    STREAM_INFO_FIELDS,
    TCP_VERDICT_CASES,
    http_verdict,
    tcp_verdict,
)


def _record(names: tuple[str, ...], values: tuple[Any, ...]) -> wc.Record:
    record = wc.Record()
    for name, value in zip(names, values, strict=True):
        setattr(record, name, value)
    return record


def _info(info: StreamInfo) -> wc.Record:
    return _record(STREAM_INFO_FIELDS, (info.source_address, info.destination_address,
                                        info.server_name, list(info.metadata)))


def _args(event: Event) -> list[Any]:
    match event:
        case TcpOpen(info) | HttpOpen(info):
            return [_info(info)]
        case TcpData(direction, data, eos) | HttpBody(direction, data, eos):
            return [DIRECTION.names[direction], data, eos]
        case TcpClose():
            return []
        case HttpHeaders(direction, headers, eos):
            return [DIRECTION.names[direction], list(headers), eos]
        case HttpTrailers(direction, trailers):
            return [DIRECTION.names[direction], list(trailers)]
    raise TypeError(f"not an event: {event!r}")


def _bytes(value: Any) -> Any:
    """wasmtime-py gives a list<u8> as a list of ints."""
    if isinstance(value, list) and all(isinstance(item, int) for item in value):
        return bytes(value)
    if isinstance(value, list):
        return tuple(_bytes(item) for item in value)
    if isinstance(value, tuple):
        return tuple(_bytes(item) for item in value)
    return value


def _verdict(event: Event, value: Any) -> Verdict | None:
    if isinstance(event, TcpClose):
        return None
    if isinstance(event, TcpOpen | TcpData):
        return tcp_verdict(TCP_VERDICT_CASES.index(value.tag), _bytes(value.payload))
    case = HTTP_VERDICT_CASES.index(value.tag)
    names = MUTATION_FIELDS if case == 0 else IMMEDIATE_RESPONSE_FIELDS
    return http_verdict(case, tuple(_bytes(getattr(value.payload, name)) for name in names))


def component_model_verdicts(wasm: bytes, events: list[Event]) -> list[Verdict | None]:
    """Each event delivered, in order, to one instance of the component `wasm`."""
    engine = wasmtime.Engine()
    component = wc.Component(engine, wasm)
    linker = wc.Linker(engine)
    linker.add_wasip2()
    linker.define_unknown_imports_as_traps(component)
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    instance = linker.instantiate(store, component)
    verdicts = []
    for event in events:
        export = EXPORTS[type(event)]
        interface = component.get_export_index(export.interface_id)
        index = component.get_export_index(export.function, interface)
        assert index is not None, export.core_name
        func = instance.get_func(store, index)
        assert func is not None, export.core_name
        value = func(store, *_args(event))
        func.post_return(store)
        verdicts.append(_verdict(event, value))
    return verdicts
