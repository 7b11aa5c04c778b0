"""The committed protobuf stubs are exactly what `make proto` generates from the .proto."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import model_server.proto

PROTO_DIR = Path(model_server.proto.__file__).parent
# The same arguments as the Makefile's `proto` target.
PROTOC_ARGS = (
    "-I . --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. "
    "model_server/proto/grpc_service.proto model_server/proto/monitoring.proto "
    "model_server/proto/model_repository.proto"
)
GENERATED = [
    f"{proto}{suffix}"
    for proto in ("grpc_service", "monitoring", "model_repository")
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
]


@pytest.mark.parametrize("name", GENERATED)
def test_stub_is_fresh(tmp_path: Path, name: str) -> None:
    source = tmp_path / "model_server" / "proto"
    source.mkdir(parents=True)
    for proto in PROTO_DIR.glob("*.proto"):
        shutil.copy(proto, source)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *PROTOC_ARGS.split()],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        check=True,
    )
    assert (source / name).read_text() == (PROTO_DIR / name).read_text(), "run `make proto`"
