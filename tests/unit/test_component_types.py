"""A component's WIT types as wasm-tools resolves them, laid out as the canonical ABI lays them
out: the sizes, alignments and payload offsets WASI's functions are answered at on kvm."""

from __future__ import annotations

import pytest

from tests.conftest import plugin_dir
from vmm.component_types import (
    ComponentTypes,
    ComponentTypesError,
    Handle,
    ListOf,
    Record,
    Variant,
    component_types,
)
from vmm.manifest import load_manifest


@pytest.fixture(scope="module")
def python_types() -> ComponentTypes:
    return component_types(load_manifest(plugin_dir("jwt-auth")).wasm.read_bytes())


def test_wasi_results_are_laid_out_as_the_canonical_abi_says(python_types: ComponentTypes
                                                            ) -> None:
    functions = python_types.functions
    check_write = functions["wasi:io/streams@0.2.9", "[method]output-stream.check-write"]
    assert isinstance(check_write.params[0], Handle) and not check_write.params[0].own
    result = check_write.result
    # result<u64, stream-error>: a byte of case, the u64 at 8; stream-error's own<error> at 4
    assert isinstance(result, Variant) and (result.size, result.align) == (16, 8)
    assert result.payload_offset == 8
    error = result.cases[1][1]
    assert isinstance(error, Variant) and error.case("closed") == 1
    assert (error.size, error.payload_offset) == (8, 4)
    stat = functions["wasi:filesystem/types@0.2.9", "[method]descriptor.stat"].result
    assert isinstance(stat, Variant) and stat.cases[0][1] is not None
    assert (stat.cases[0][1].size, stat.size) == (96, 104)  # descriptor-stat, and its result
    now = functions["wasi:clocks/wall-clock@0.2.9", "now"].result
    assert isinstance(now, Record) and [(n, o) for n, _, o in now.fields] == [
        ("seconds", 0), ("nanoseconds", 8)] and now.size == 16
    directories = functions["wasi:filesystem/preopens@0.2.9", "get-directories"].result
    assert isinstance(directories, ListOf) and isinstance(directories.element, Record)
    assert directories.element.size == 12  # tuple<own<descriptor>, string>


def test_a_handle_names_its_resource(python_types: ComponentTypes) -> None:
    stdout = python_types.functions["wasi:cli/stdout@0.2.9", "get-stdout"].result
    assert stdout == Handle(4, 4, True, "output-stream")


def test_what_is_not_a_component_is_an_error() -> None:
    with pytest.raises(ComponentTypesError):
        component_types(b"\0asm\x01\0\0\0")
