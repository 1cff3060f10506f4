"""Small helpers used across the package: seeded row samples, safe output files, gzip-or-plain
files, strict JSON and progress bars.

Output files
------------
Every file CellBridge writes goes through :func:`atomic_write` (one file) or
:func:`atomic_outputs` (several files or folders that appear together or not at all):

- the data are written to a visible temporary sibling ``NAME.cellbridge-tmp-HOST-PID-TOKEN``
  (``HOST``: this machine's short name, ``PID``: the writing process), then renamed to ``NAME``;
- on an error, Ctrl-C (SIGINT) or SIGTERM the temporary files are removed and ``NAME`` is left
  as it was;
- a process killed outright (SIGKILL, power loss) cannot clean up: its temporary file stays,
  visible under that name, and the next write to the same ``NAME`` on the same machine removes
  it once process ``PID`` no longer runs (files of other machines or of running processes are
  left alone);
- the final file gets the permissions a plain ``open(NAME, "w")`` would give it (``0o666`` minus
  the umask: ``0o644`` with umask 022), folders ``0o777`` minus the umask.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import gzip
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

logger = logging.getLogger("cellbridge")

#: Marker in the names of temporary output files (``NAME.cellbridge-tmp-HOST-PID-TOKEN``).
TMP_MARKER = ".cellbridge-tmp-"
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"
_TMP_NAME = re.compile(re.escape(TMP_MARKER) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{6}")


def subsample_rows(n: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded sample of ``max_rows`` of ``n`` row indices, or None when all rows fit.

    The one seeded subsample of the package: the same ``(n, max_rows, seed)`` always gives the same
    rows (``numpy.random.default_rng(seed).choice`` without replacement, sorted).
    """
    if max_rows is None or n <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


def sample_or_all(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """:func:`subsample_rows` as an index array (``arange(n)`` when all rows fit)."""
    rows = subsample_rows(n, max_rows, seed)
    return np.arange(n) if rows is None else rows


# --------------------------------------------------------------------------------------------
# output files
# --------------------------------------------------------------------------------------------
def temp_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh temporary name beside ``path``: ``NAME.cellbridge-tmp-HOST-PID-TOKEN`` + ``suffix``."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARKER}{_HOST}-{os.getpid()}-{secrets.token_hex(3)}{suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: it no longer writes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Temporary siblings of ``path`` left by dead processes of this machine (see the module notes)."""
    path = Path(path)
    folder, prefix = path.parent, path.name + TMP_MARKER
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return []
    stale = []
    for name in names:
        m = _TMP_NAME.match(name, len(path.name))
        if m and m.group("host") == _HOST and not _pid_alive(int(m.group("pid"))):
            stale.append(folder / name)
    return stale


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove :func:`stale_temp_files` of ``path``; returns what was removed."""
    removed = []
    for tmp in stale_temp_files(path):
        with contextlib.suppress(OSError):
            _remove(tmp)
            removed.append(tmp)
            logger.info("removed %s, left by an earlier write that was killed", tmp)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _existing_ancestor(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    kind: str = "file",
) -> Path:
    """Check that ``path`` can be written, before any work is spent on what goes into it.

    Refuses (with the reason and the fix): an existing file (or a non-empty
    folder) without ``overwrite``, a file where a folder is wanted and the reverse, a parent that
    is a file, and a folder that cannot be written (tried by creating and removing a temporary
    file). Missing parent folders are fine: they are created when the output is written.

    Parameters
    ----------
    path
        The output file or folder.
    overwrite
        Whether an existing output may be replaced.
    kind
        ``"file"`` or ``"dir"`` (a folder of files, e.g. a saved model).

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`pathlib.Path`.
    """
    from ._errors import CellBridgeInputError

    path = Path(path)
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    if path.exists():
        if kind == "file" and path.is_dir():
            raise CellBridgeInputError(f"{path} is a folder; give the name of a file to write.")
        if kind == "dir" and not path.is_dir():
            raise CellBridgeInputError(f"{path} is a file; give the name of a folder (new or empty).")
        if not overwrite and (kind == "file" or any(path.iterdir())):
            what = "exists" if kind == "file" else "exists and is not empty"
            raise FileExistsError(f"{path} {what}; pass `overwrite=True` to replace it.")
    folder = _existing_ancestor(path)
    if not folder.is_dir():
        raise CellBridgeInputError(f"cannot write {path}: {folder} is a file, not a folder.")
    probe = temp_sibling(folder / path.name)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.remove(probe)
    except OSError as err:
        what = ("is not writable" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "does not accept new files")
        raise CellBridgeInputError(
            f"cannot write {path}: the folder {folder} {what} ({err.strerror or err}); choose another location."
        ) from err
    return path


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; returns the folders created (deepest last)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
    return list(reversed(missing))


def _remove_empty(folders: list[Path]) -> None:
    for f in reversed(folders):
        with contextlib.suppress(OSError):
            f.rmdir()


class Terminated(SystemExit):
    """SIGTERM (or SIGHUP) turned into an exception so that clean-up code runs."""


def _raise_terminated(signum, frame):
    raise Terminated(128 + signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While active (main thread only), SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` when
    they would otherwise kill the process silently, so that ``finally`` blocks remove temporary
    files. SIGINT already raises :class:`KeyboardInterrupt`. Handlers set by the program are kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _new_temp_file(path: Path, suffix: str = "") -> Path:
    tmp = temp_sibling(path, suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode: 0o666 minus the umask
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *, overwrite: bool = False,
                 suffix: str = "") -> Path:
    """Write ``path`` through ``write(tmp_path)`` into a temporary sibling, then rename it.

    An interrupted write never leaves a half-written ``path``: the temporary file is removed on
    any error, on Ctrl-C and on SIGTERM; one left by a killed process is removed by the next write
    to ``path`` (see the module notes). The file gets the mode ``open()`` would give (from the
    umask). An existing ``path`` is refused unless ``overwrite``; missing parent folders are
    created (and removed again when the write fails).

    Parameters
    ----------
    path
        The file to write.
    write
        Called with the temporary file's name (an empty file already created); writes the data.
    overwrite
        Replace an existing ``path`` (otherwise :class:`FileExistsError`).
    suffix
        Ending appended to the temporary name, for writers that insist on one.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`pathlib.Path`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
    remove_stale_temp_files(path)
    created = _make_parents(path.parent)
    tmp = None
    try:
        with signals_raise():
            tmp = _new_temp_file(path, suffix)
            write(str(tmp))
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                _remove(tmp)
        _remove_empty(created)
        raise
    return path


class OutputSet:
    """Outputs staged under temporary names that appear together in :meth:`commit`.

    Made by :func:`atomic_outputs`; :meth:`stage` gives the temporary name to write each output to:
    ``NAME.cellbridge-tmp-HOST-PID-TOKEN/NAME`` (inside a temporary folder, so that the name, and
    its ending, are the final ones).
    """

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path, str]] = []
        self._created: list[Path] = []

    def stage(self, path: str | os.PathLike, *, kind: str = "file", overwrite: bool | None = None) -> Path:
        """Reserve ``path`` and return the temporary name to write it to.

        Parameters
        ----------
        path
            The final file or folder.
        kind
            ``"file"`` (write the file at the returned name) or ``"dir"`` (an empty folder is
            created at the returned name; write its files into it).
        overwrite
            Whether this output may replace an existing one (None: the set's ``overwrite``), e.g.
            True for a model folder that training filled with checkpoints after it was checked.

        Returns
        -------
        pathlib.Path
            The temporary name.
        """
        path = check_output(path, overwrite=self.overwrite if overwrite is None else overwrite, kind=kind)
        remove_stale_temp_files(path)
        self._created += _make_parents(path.parent)
        box = temp_sibling(path)
        box.mkdir()
        self._staged.append((box, path, kind))
        tmp = box / path.name
        if kind == "dir":
            tmp.mkdir()
        return tmp

    def commit(self) -> list[Path]:
        """Rename every staged output that was written to its final name (all or none).

        Returns
        -------
        list of pathlib.Path
            The outputs now in place.
        """
        done: list[tuple[Path, Path | None]] = []  # (final, its previous version moved aside)
        merged: list[Path] = []
        try:
            for box, final, kind in self._staged:
                tmp = box / final.name
                if not tmp.exists():
                    continue
                if kind == "dir" and final.is_dir():  # merge: each entry replaces its namesake
                    for entry in sorted(tmp.iterdir()):
                        os.replace(entry, final / entry.name)
                    tmp.rmdir()
                    merged.append(final)
                    continue
                old = None
                if final.exists():
                    old = temp_sibling(final)
                    os.replace(final, old)
                os.replace(tmp, final)
                done.append((final, old))
        except BaseException:
            for final, old in reversed(done):
                with contextlib.suppress(OSError):
                    _remove(final)
                    if old is not None:
                        os.replace(old, final)
            raise
        for _, old in done:
            if old is not None:
                with contextlib.suppress(OSError):
                    _remove(old)
        self.discard()
        return [final for final, _ in done] + merged

    def discard(self) -> None:
        """Remove every staged temporary output (and the parent folders created for them)."""
        for box, _, _ in self._staged:
            with contextlib.suppress(OSError):
                _remove(box)
        _remove_empty(self._created)
        self._staged = []


@contextlib.contextmanager
def atomic_outputs(*, overwrite: bool = False) -> Iterator[OutputSet]:
    """Write several outputs so that they all appear or none does.

    Inside the block, write each output to ``outputs.stage(path)`` (or ``stage(path,
    kind="dir")`` for a folder). When the block ends normally every staged output is renamed into
    place; on an error, Ctrl-C or SIGTERM all of them are removed. An existing folder given with
    ``overwrite`` keeps its other files (each staged entry replaces its namesake).

    Parameters
    ----------
    overwrite
        Whether existing outputs may be replaced.

    Yields
    ------
    OutputSet
        The set to :meth:`~OutputSet.stage` outputs into.
    """
    outputs = OutputSet(overwrite)
    try:
        with signals_raise():
            yield outputs
            outputs.commit()
    except BaseException:
        outputs.discard()
        raise


# --------------------------------------------------------------------------------------------
# files, JSON, progress
# --------------------------------------------------------------------------------------------
def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (gzip and bgzip alike)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_maybe_gzip(path: str | os.PathLike, mode: str = "rt"):
    """Open a plain or gzip-compressed file (``"rt"``: UTF-8 text, ``"rb"``: bytes)."""
    raw = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # noqa: SIM115 (returned open)
    return io.TextIOWrapper(raw, encoding="utf-8") if mode == "rt" else raw


def to_json(obj) -> str:
    """Strict JSON (``NaN``/``inf`` become ``null``; numpy scalars and arrays become numbers and lists)."""
    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x

    return json.dumps(clean(obj), indent=1, allow_nan=False)


_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("cellbridge_progress", default=True)


@contextlib.contextmanager
def progress_enabled(enabled: bool) -> Iterator[None]:
    """Turn CellBridge's progress bars on or off inside the block (the CLI's ``--quiet``)."""
    token = _PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def progress_bar(iterable=None, *, desc: str, total: int | None = None, unit: str = "it",
                 enabled: bool = True, delay: float = 2.0, leave: bool = True, **kwargs):
    """A tqdm bar for a step that may take long; shown only after ``delay`` seconds.

    Off when ``enabled`` is False, inside ``progress_enabled(False)`` (the CLI's ``--quiet``), or
    with the environment variable ``TQDM_DISABLE=1``.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, delay=delay, leave=leave,
                disable=not (enabled and _PROGRESS.get()), **kwargs)


_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("cellbridge_threads", default=None)
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def resolve_threads(n_threads: int = -1) -> int:
    """``n_threads`` when positive, else the limit set by :func:`limit_threads`, else -1 (all cores)."""
    if n_threads > 0:
        return n_threads
    limit = _THREADS.get()
    return limit if limit is not None else -1


@contextlib.contextmanager
def limit_threads(n_threads: int | None) -> Iterator[None]:
    """Use at most ``n_threads`` CPU threads inside the block (the CLI's ``--threads``).

    Limits torch, the BLAS/OpenMP libraries already loaded (threadpoolctl), numba, libraries
    loaded later (through ``OMP_NUM_THREADS`` and its kin) and CellBridge's neighbour searches
    (hnswlib, faiss). None changes nothing.
    """
    if n_threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    saved_env = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update({k: str(n_threads) for k in _THREAD_ENV})
    saved_torch = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    numba = sys.modules.get("numba")
    saved_numba = numba.get_num_threads() if numba is not None else None
    if numba is not None:
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    token = _THREADS.set(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        _THREADS.reset(token)
        torch.set_num_threads(saved_torch)
        if saved_numba is not None:
            numba.set_num_threads(saved_numba)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
