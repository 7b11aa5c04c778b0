"""The long-lived heap is frozen out of full collections, at start and after each reload."""

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.heap import freeze_long_lived
from model_server.proto import model_repository_pb2 as repo_pb
from model_server.proto import model_repository_pb2_grpc as repo_grpc
from tests.conftest import Serve
from tests.model_server.test_models import probe_config, write_probe


class _Node:
    """An object in a reference cycle: only the collector can free it."""

    def __init__(self) -> None:
        self.me = self


def _tracked(obj: object) -> bool:
    """Whether a collection would walk `obj` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_garbage_is_collected_before_the_survivors_are_frozen() -> None:
    gc.disable()  # only freeze_long_lived may collect here
    try:
        garbage = _Node()
        dead = weakref.ref(garbage)
        del garbage
        survivor = _Node()
        assert dead() is not None
        assert _tracked(survivor)

        freeze_long_lived()

        assert dead() is None
        assert not _tracked(survivor)
        assert gc.get_freeze_count() > 0
    finally:
        gc.enable()


def test_the_server_freezes_once_ready_and_again_after_an_unload(
    repository: Path, serve: Serve
) -> None:
    write_probe(repository / "probe" / "1", probe_config())
    before_start = _Node()
    server = serve(repository)
    assert not _tracked(before_start)

    before_unload = _Node()
    assert server.channel is not None
    repo_grpc.ModelRepositoryServiceStub(server.channel).RepositoryModelUnload(
        repo_pb.RepositoryModelUnloadRequest(model_name="probe")
    )
    assert not _tracked(before_unload)
