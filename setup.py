"""Compiles proto/ at install (pip install [-e] .): each .proto there becomes a descriptor set
in sidecar/protos/, where sidecar.protos makes its message classes. Descriptors, not
generated Python, so the protobuf runtime may be any version pyproject.toml allows, whatever
protoc grpcio-tools brings. Everything else about the package is in pyproject.toml."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "proto"
TARGET = ROOT / "sidecar" / "protos"
# The name the files have in the protobuf pool: beside xds-protos' envoy/..., never theirs.
VIRTUAL_ROOT = "hyperfilter"


def compile_protos() -> None:
    from grpc_tools import protoc  # the build-system requirement

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    for source in sorted(SOURCES.glob("*.proto")):
        target = TARGET / f"{source.stem}.binpb"
        status = protoc.main(["protoc", f"--proto_path={VIRTUAL_ROOT}={SOURCES}",
                              f"--proto_path={well_known}", f"--descriptor_set_out={target}",
                              f"{VIRTUAL_ROOT}/{source.name}"])
        if status != 0:
            raise SystemExit(f"protoc could not compile {source}")


class BuildWithProtos(build_py):
    def run(self) -> None:
        compile_protos()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
