"""Message classes for the project's own declarations in proto/ (what the Envoy it ships
speaks and xds-protos lacks). Installing the package compiles them (setup.py) into a
descriptor set beside this file, one per .proto; the classes are made from it here, in
protobuf's default pool, under the project's own package names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

_HERE = Path(__file__).resolve().parent
# What the declarations import: importing it registers it in the pool, before them.
_DEPENDENCIES = (struct_pb2,)


class ProtosNotCompiled(ImportError):
    """The descriptor set is missing: the package was not installed from this tree."""


def message_classes(name: str) -> dict[str, Any]:
    """The messages of proto/`name`.proto by full name."""
    compiled = _HERE / f"{name}.binpb"
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(compiled.read_bytes())
    except FileNotFoundError:
        raise ProtosNotCompiled(f"{compiled} is missing: `pip install -e .` compiles "
                                f"proto/{name}.proto") from None
    pool = descriptor_pool.Default()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClassesForFiles([file.name for file in files.file], pool)
