"""Package helpers (cellbridge._utils): seeded row samples, atomic writes and output checks,
gzip-or-plain files, progress bars and thread limits."""

from __future__ import annotations

import gzip
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cellbridge._errors import CellBridgeInputError
from cellbridge._utils import (
    TMP_MARKER,
    atomic_outputs,
    atomic_write,
    check_output,
    is_gzip,
    limit_threads,
    open_maybe_gzip,
    progress_bar,
    progress_enabled,
    remove_stale_temp_files,
    resolve_threads,
    sample_or_all,
    stale_temp_files,
    subsample_rows,
    temp_sibling,
)


def test_subsample_rows_none_when_all_fit_and_seeded_sorted_sample_otherwise():
    assert subsample_rows(10, None, 0) is None and subsample_rows(10, 10, 0) is None
    rows = subsample_rows(100, 7, seed=3)
    assert rows.shape == (7,) and np.all(np.diff(rows) > 0) and rows.max() < 100
    assert np.array_equal(rows, subsample_rows(100, 7, seed=3))
    assert np.array_equal(rows, np.sort(np.random.default_rng(3).choice(100, 7, replace=False)))
    assert np.array_equal(sample_or_all(5, 10, 0), np.arange(5))
    assert np.array_equal(sample_or_all(100, 7, 3), rows)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "broken.h5ad"

    def boom(tmp):
        Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "sub" / "x.txt"
    assert atomic_write(path, lambda tmp: Path(tmp).write_text("one")) == path
    with pytest.raises(FileExistsError, match="overwrite"):
        atomic_write(path, lambda tmp: Path(tmp).write_text("two"))
    assert path.read_text() == "one"
    atomic_write(path, lambda tmp: Path(tmp).write_text("two"), overwrite=True)
    assert path.read_text() == "two" and [p.name for p in path.parent.iterdir()] == ["x.txt"]


def test_gzip_and_plain_files_read_alike(tmp_path):
    plain, packed = tmp_path / "a.tsv", tmp_path / "a.tsv.gz"
    plain.write_text("chr1\t1\t2\n")
    with gzip.open(packed, "wt") as fh:
        fh.write("chr1\t1\t2\n")
    assert not is_gzip(plain) and is_gzip(packed)
    for path in (plain, packed):
        with open_maybe_gzip(path) as fh:
            assert fh.read() == "chr1\t1\t2\n"
        with open_maybe_gzip(path, "rb") as fh:
            assert fh.read() == b"chr1\t1\t2\n"


def test_temp_files_have_a_visible_recognisable_name(tmp_path):
    tmp = temp_sibling(tmp_path / "result.h5mu")
    assert tmp.parent == tmp_path and not tmp.name.startswith(".")
    assert tmp.name.startswith("result.h5mu" + TMP_MARKER) and f"-{os.getpid()}-" in tmp.name
    seen = []
    atomic_write(tmp_path / "x.txt", lambda t: seen.append(Path(t).name) or Path(t).write_text("x"))
    assert seen[0].startswith("x.txt" + TMP_MARKER) and sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "out.txt"
    host = temp_sibling(target).name[len("out.txt" + TMP_MARKER):].rsplit("-", 2)[0]
    dead = tmp_path / f"out.txt{TMP_MARKER}{host}-{_dead_pid()}-abcdef"
    alive = tmp_path / f"out.txt{TMP_MARKER}{host}-{os.getppid()}-abcdef"  # a running process
    elsewhere = tmp_path / f"out.txt{TMP_MARKER}otherhost-{_dead_pid()}-abcdef"  # another machine's
    other_target = tmp_path / f"other.txt{TMP_MARKER}{host}-{_dead_pid()}-abcdef"
    dead_dir = tmp_path / f"out.txt{TMP_MARKER}{host}-{_dead_pid()}-123456"
    for p in (dead, alive, elsewhere, other_target):
        p.write_text("partial")
    dead_dir.mkdir()
    (dead_dir / "out.txt").write_text("staged")
    assert sorted(stale_temp_files(target)) == sorted([dead, dead_dir])
    atomic_write(target, lambda t: Path(t).write_text("new"))
    assert target.read_text() == "new" and not dead.exists() and not dead_dir.exists()
    assert alive.exists() and elsewhere.exists() and other_target.exists()
    assert remove_stale_temp_files(target) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_mode_follows_the_umask(tmp_path, umask, mode):
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from cellbridge._utils import atomic_outputs, atomic_write
        os.umask({umask})
        atomic_write("a/one.txt", lambda t: Path(t).write_text("1"))
        with atomic_outputs() as out:
            Path(out.stage("two.txt")).write_text("2")
            (out.stage("model", kind="dir") / "w.pt").write_text("w")
    """)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=60)
    for name in ("a/one.txt", "two.txt", "model/w.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    for name in ("a", "model"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o777 & ~umask, name


_SLOW_WRITE = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from cellbridge._utils import atomic_write

    # Python's own Ctrl-C handler, also when the test runs in a background job (which starts
    # children with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def write(tmp):
        Path(tmp).write_text("partial")
        print("writing", flush=True)
        # short sleeps: the kernel may hand the signal to another thread (numpy's BLAS pool), and
        # then a single long sleep in the main thread would run the handler only when it ends
        for _ in range(1200):
            time.sleep(0.05)

    atomic_write(sys.argv[1], write)
""")


def _start_slow_write(tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(tmp_path / "sub" / "out.txt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # the temporary file exists now
    assert any(TMP_MARKER in p.name for p in (tmp_path / "sub").iterdir())
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_write_leaves_nothing(tmp_path, sig):
    proc = _start_slow_write(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
    else:
        assert proc.returncode == 128 + sig
    assert list(tmp_path.iterdir()) == []  # neither the file, nor its temporary, nor the folder made for it


def test_killed_write_leaves_a_visible_temp_file_that_the_next_write_removes(tmp_path):
    proc = _start_slow_write(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    left = [p.name for p in (tmp_path / "sub").iterdir()]
    assert len(left) == 1 and left[0].startswith("out.txt" + TMP_MARKER) and f"-{proc.pid}-" in left[0]
    atomic_write(tmp_path / "sub" / "out.txt", lambda t: Path(t).write_text("done"))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.txt"]


def test_atomic_outputs_appear_together_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError), atomic_outputs() as out:
        Path(out.stage(tmp_path / "new" / "result.h5mu")).write_text("result")
        assert out.stage(tmp_path / "new" / "model", kind="dir").name == "model"  # the final name
        raise RuntimeError("the model could not be saved")
    assert list(tmp_path.iterdir()) == []
    with atomic_outputs() as out:
        Path(out.stage(tmp_path / "result.h5mu")).write_text("result")
        (out.stage(tmp_path / "model", kind="dir") / "model.pt").write_text("weights")
        assert not (tmp_path / "result.h5mu").exists()  # nothing appears before the block ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "result.h5mu"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["model.pt"]
    with pytest.raises(FileExistsError, match="overwrite"), atomic_outputs() as out:
        out.stage(tmp_path / "result.h5mu")
    (tmp_path / "model" / "checkpoint.pt").write_text("kept")
    with atomic_outputs(overwrite=True) as out:
        Path(out.stage(tmp_path / "result.h5mu")).write_text("result 2")
        (out.stage(tmp_path / "model", kind="dir") / "model.pt").write_text("weights 2")
    assert (tmp_path / "result.h5mu").read_text() == "result 2"
    assert (tmp_path / "model" / "model.pt").read_text() == "weights 2"
    assert (tmp_path / "model" / "checkpoint.pt").read_text() == "kept"  # other files of the folder stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "result.h5mu"]


def test_check_output_names_the_problem(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("a")
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "new" / "deeper" / "x.h5mu") == tmp_path / "new" / "deeper" / "x.h5mu"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert check_output(tmp_path / "empty", kind="dir") == tmp_path / "empty"
    assert check_output(tmp_path / "file.txt", overwrite=True) == tmp_path / "file.txt"
    cases = [
        ({"path": tmp_path / "file.txt"}, FileExistsError, "exists; pass `overwrite=True`"),
        ({"path": tmp_path / "full", "kind": "dir"}, FileExistsError, "exists and is not empty"),
        ({"path": tmp_path / "full"}, CellBridgeInputError, "is a folder"),
        ({"path": tmp_path / "file.txt", "kind": "dir", "overwrite": True}, CellBridgeInputError, "is a file"),
        ({"path": tmp_path / "file.txt" / "x.h5mu"}, CellBridgeInputError, "file.txt is a file, not a folder"),
        ({"path": "/proc/cellbridge-test/x.h5mu"}, CellBridgeInputError, "cannot write"),
    ]
    for kwargs, error, words in cases:
        path = kwargs.pop("path")
        with pytest.raises(error, match=re.escape(words)):
            check_output(path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt", "full"]


def test_progress_bars_follow_the_quiet_switch():
    assert not progress_bar(range(3), desc="x", delay=0).disable
    assert progress_bar(range(3), desc="x", enabled=False).disable
    with progress_enabled(False):
        assert progress_bar(range(3), desc="x").disable
    assert not progress_bar(range(3), desc="x", delay=0).disable


def test_limit_threads_limits_torch_and_the_neighbour_search_then_restores():
    import torch

    before = torch.get_num_threads()
    assert resolve_threads(-1) == -1 and resolve_threads(3) == 3
    with limit_threads(1):
        assert torch.get_num_threads() == 1 and resolve_threads(-1) == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == before and resolve_threads(-1) == -1
    with limit_threads(None):
        assert torch.get_num_threads() == before
