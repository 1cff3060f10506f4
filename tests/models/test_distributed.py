"""Generic data-parallel machinery (cellbridge.models.distributed): the group strategy's row
arithmetic and the spawn retry. The models' data-parallel training is compared with one process
in tests/models/biclum/test_training.py and tests/models/scmdcf/test_training.py."""

from __future__ import annotations

import pytest
import torch

from cellbridge import CellBridgeInputError
from cellbridge.models.biclum._training import check_split
from cellbridge.models.distributed import DataParallelGroup, LocalGroup, resolve_world_size


def _rank(rank: int, world_size: int) -> DataParallelGroup:
    """A DataParallelGroup as process ``rank`` of ``world_size`` sees it (no process group needed
    for the row arithmetic)."""
    group = DataParallelGroup.__new__(DataParallelGroup)
    group.rank, group.world_size = rank, world_size
    return group


def test_global_batch_split():
    idx = torch.arange(64)
    parts = [_rank(r, 4).split(idx) for r in range(4)]
    assert [len(p) for p in parts] == [16] * 4
    assert torch.equal(torch.cat(parts), idx)
    assert torch.equal(LocalGroup().split(idx), idx)
    with pytest.raises(CellBridgeInputError, match="split evenly"):
        check_split(400, 63, 2)
    with pytest.raises(CellBridgeInputError, match="at least one full batch"):
        check_split(60, 64, 2)
    check_split(64, 64, 4)


def test_near_equal_shares_cover_all_rows():
    shares = [_rank(r, 3).share(10) for r in range(3)]
    assert shares == [(0, 3), (3, 6), (6, 10)]
    assert [len(_rank(r, 2).split(torch.arange(63))) for r in range(2)] == [32, 31]
    assert _rank(1, 2).mean_weight(31, 63) == pytest.approx(2 * 31 / 63)
    assert LocalGroup().share(10) == (0, 10) and LocalGroup().mean_weight(5, 10) == 1.0


def test_resolve_world_size(monkeypatch):
    assert resolve_world_size(4, torchrun=False) == 4
    with pytest.raises(CellBridgeInputError, match="positive number"):
        resolve_world_size(0, torchrun=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_world_size(None, torchrun=True) == 2
    with pytest.raises(CellBridgeInputError, match="torchrun started 2"):
        resolve_world_size(3, torchrun=True)


def test_spawn_starts_again_only_when_a_rank_could_not_join(monkeypatch):
    import torch.multiprocessing as mp

    from cellbridge.models import distributed

    def failing(message):
        def spawn_once(*args):
            calls.append(args[4])  # the rendezvous address of this attempt
            raise mp.ProcessRaisedException(message, 0, 0)
        return spawn_once

    calls: list[str] = []
    ports = iter(range(1, 10))
    monkeypatch.setattr(distributed, "_free_port", lambda: next(ports))
    monkeypatch.setattr(distributed, "_spawn_once", failing("... GroupStartError: rank 1 could not join"))
    with pytest.raises(mp.ProcessRaisedException, match="GroupStartError"):
        distributed._spawn(None, None, 2, "gloo", None, 1, attempts=3)
    assert calls == [f"tcp://127.0.0.1:{p}" for p in (1, 2, 3)]  # a fresh port each time

    calls.clear()
    with pytest.raises(mp.ProcessRaisedException, match="GroupStartError"):
        distributed._spawn(None, None, 2, "gloo", "tcp://10.0.0.1:29500", 1, attempts=3)
    assert calls == ["tcp://10.0.0.1:29500"]  # the user's address is not retried

    calls.clear()
    monkeypatch.setattr(distributed, "_spawn_once", failing("ValueError: bad data in rank 0"))
    with pytest.raises(mp.ProcessRaisedException, match="bad data"):
        distributed._spawn(None, None, 2, "gloo", None, 1, attempts=3)
    assert len(calls) == 1  # a training error is not retried
