"""Atomic file writes (temporary file in the same folder + rename) that honour the umask.

A file written in one piece (results tables, scenario YAML, reports, shards, figures, videos,
saved policies) goes through one of:

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: the whole content in memory;
- :func:`atomic_path`: a context manager yielding a temporary path for writers that need a file
  name (``np.savez``, ``safetensors``, ``imageio``, PIL, ``tarfile``, ``fig.savefig``...). The file
  is renamed onto the target when the block ends normally and removed when it raises.

Folders written whole and renamed into place (drive logs, scene bundles, exports, episode
folders) start from :func:`make_temp_dir`, which is ``tempfile.mkdtemp`` with the mode of a plain
``os.mkdir`` (``0o777 & ~umask``) instead of ``0o700``, and end with :func:`replace_dir`.
``parents=True`` makes the target's folder first (every writer that did ``mkdir`` + write).

:func:`sha256_file` is the one streamed file hash (bundle provenance, actor library, run
definitions). :func:`json_safe` is the one walker that turns results (numpy scalars and arrays,
paths, dataclasses, non-finite floats) into values ``json.dumps`` writes as strict JSON.

Readers never see a half-written file: the target is either the old file or the complete new one
(``os.replace`` is atomic on POSIX within one file system, hence the temporary file lives next to
the target). A failure (the writer raising, a full disk, a failing rename) removes the temporary
file and re-raises the original exception unchanged; the old target stays as it was.

File mode: the final file gets the mode a plain ``open(path, "w")`` would give it, i.e.
``0o666 & ~umask`` (``0o644`` under the usual umask 022; default ACLs of the folder apply too).
``tempfile.mkstemp`` creates its files ``0o600``, which made every renamed result unreadable by
other users of a shared machine. The umask is never read or changed (``os.umask`` can only be
read by setting it, which races with other threads): the temporary file is created with
``os.open(..., 0o666)`` and the kernel applies the umask; the mode it received is recorded and put
back before the rename in case the writer of :func:`atomic_path` replaced the file with one of
another mode.

Durability: by default no ``fsync`` (the rename is atomic for concurrent readers and a crash of
the process, which is what the project relies on; results are recomputable). ``fsync=True``
flushes the file's data before the rename and the folder entry after it, for files that must
survive a power loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import math
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LoopdriveError

__all__ = [
    "MAX_INPUT_BYTES",
    "atomic_path",
    "atomic_savez",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_input_file",
    "json_safe",
    "make_temp_dir",
    "read_input_bytes",
    "replace_dir",
    "sha256_file",
]

#: Default cap on one small input file read whole (scenario YAML, JSON of a drive log or bundle):
#: 64 MiB. Larger files are refused before a byte is read (see :func:`check_input_file`).
MAX_INPUT_BYTES = 64 * 1024 * 1024

_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)  # fmt: skip
_TRIES = 100


def _create_temp(path: Path, suffix: str) -> tuple[int, Path]:
    """A new, empty, exclusively created file ``.<name>.<random><suffix>`` next to ``path``
    (open for writing; mode ``0o666`` minus the umask). A device, FIFO or socket at ``path`` is
    refused (``OSError`` EINVAL): the final rename would replace it with a file (``/dev/full`` or
    ``/dev/null`` as root)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OSError(errno.EINVAL, "refusing to replace a device, FIFO or socket with a file", str(path))
    for _ in range(_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))  # pragma: no cover


def _fsync_file(tmp: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / file system can open a folder
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(tmp: Path, path: Path, mode: int, fsync: bool) -> None:
    """Restore ``mode`` on ``tmp`` if its writer changed it, then rename it onto ``path``."""
    if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
        os.chmod(tmp, mode)
    if fsync:
        _fsync_file(tmp)
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp", fsync: bool = False, parents: bool = False) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on normal exit rename it onto ``path``.

    The temporary file exists (empty) when the block starts; the writer may overwrite or replace
    it. ``suffix`` is the temporary file's ending: give the one the writer needs to pick its format
    or not to append its own (``".npz"`` for ``np.savez``, ``".mp4"`` for imageio, ``".png"`` for
    ``savefig``). The folder of ``path`` must exist (``FileNotFoundError`` otherwise) unless
    ``parents`` makes it. If the block raises, the temporary file is removed and the exception
    propagates; ``path`` is untouched.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, suffix)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        _commit(tmp, path, mode, fsync)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False, parents: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see the module doc); returns ``path`` as a Path.
    ``parents``: make the folder of ``path`` first."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, ".tmp")
    try:
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        _commit(tmp, path, mode, fsync)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = False, parents: bool = False
) -> Path:
    """Write ``text`` (encoded with ``encoding``, no newline translation) to ``path`` atomically;
    returns ``path`` as a Path. ``parents``: make the folder of ``path`` first."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync, parents=parents)


def atomic_savez(path: str | os.PathLike[str], arrays: Any, *, compressed: bool = True) -> Path:
    """Write the mapping name -> array ``arrays`` as one ``.npz`` at ``path`` atomically
    (``np.savez_compressed``, or ``np.savez`` with ``compressed=False``; never pickled)."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path, suffix=".npz") as tmp:
        save(tmp, **arrays)
    return Path(path)


def make_temp_dir(parent: str | os.PathLike[str], prefix: str = ".tmp-") -> Path:
    """A new, empty folder ``<parent>/<prefix><random>`` with the mode a plain ``os.mkdir`` gives
    (``0o777 & ~umask``), to fill and then rename into place. ``tempfile.mkdtemp`` makes its folders
    ``0o700``, so a folder renamed from one stays closed to other users. ``parent`` must exist
    (``FileNotFoundError`` otherwise); removing the folder on failure is the caller's."""
    parent = Path(parent)
    for _ in range(_TRIES):
        p = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(p, 0o777)
        except FileExistsError:
            continue
        return p
    raise FileExistsError(errno.EEXIST, "no free temporary folder name", str(parent))  # pragma: no cover


def replace_dir(tmp: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Move the finished folder ``tmp`` (from :func:`make_temp_dir` next to ``out``) onto ``out``.

    A rename when ``out`` does not exist. Otherwise the old folder is first renamed aside (into a
    temporary folder beside it) and removed once the new one is in place: a reader sees the old
    folder or the complete new one, never a mix (POSIX cannot swap two folders in one rename, so
    for an instant there is none). Returns ``out`` as a Path."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        trash = make_temp_dir(Path(os.path.abspath(out)).parent, prefix=f".{out.name}.old-")
        os.replace(out, trash / "old")
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def json_safe(obj: Any, *, inf_as_str: bool = False, nan_as_str: bool = False) -> Any:
    """``obj`` as plain JSON values, recursively: mappings as dicts with ``str`` keys, lists and
    tuples as lists, numpy scalars and arrays as Python numbers and lists, paths as ``str``,
    dataclass instances as dicts. Non-finite floats become ``None`` (JSON ``null``) so the output
    stays strict JSON (``allow_nan=False``); ``inf_as_str`` writes +-inf as ``"inf"`` /
    ``"-inf"`` and ``nan_as_str`` NaN as ``"nan"`` instead (files read back with their infinities,
    e.g. episode ``metrics.json``). Anything else is returned unchanged."""

    def walk(o: Any) -> Any:
        if isinstance(o, float):  # np.float64 too
            if math.isfinite(o):
                return float(o)
            if math.isnan(o):
                return "nan" if nan_as_str else None
            return ("inf" if o > 0 else "-inf") if inf_as_str else None
        if isinstance(o, Mapping):
            return {str(k): walk(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [walk(v) for v in o]
        if isinstance(o, np.generic | np.ndarray):
            return walk(o.tolist())
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return walk(dataclasses.asdict(o))
        return o

    return walk(obj)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_input_file(
    path: str | os.PathLike[str],
    *,
    error: type[LoopdriveError],
    max_bytes: int | None = MAX_INPUT_BYTES,
    what: str = "a regular file",
    field: str | None = None,
) -> Path:
    """``path`` as a Path once it is known to be a regular file of at most ``max_bytes`` bytes
    (None: no cap); otherwise raise ``error`` (a :class:`~sim.errors.LoopdriveError` subclass,
    called with ``message, file=..., field=...``) before anything is read. Devices (``/dev/zero``),
    FIFOs, sockets and folders are refused, so a reader can neither block nor read without end."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"expected {what}, but it does not exist", file=p, field=field) from None
    except OSError as exc:
        raise error(f"expected {what}, cannot stat it ({exc.strerror})", file=p, field=field) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (device, FIFO or socket)"
        raise error(f"expected {what}, got {kind}", file=p, field=field)
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"expected {what} of at most {max_bytes} bytes, got {st.st_size} bytes", file=p, field=field)
    return p


def read_input_bytes(
    path: str | os.PathLike[str],
    *,
    error: type[LoopdriveError],
    max_bytes: int | None = MAX_INPUT_BYTES,
    what: str = "a regular file",
    field: str | None = None,
) -> bytes:
    """The bytes of a user's input file after :func:`check_input_file`; reads at most
    ``max_bytes + 1`` bytes so a file that grows while it is read is still refused."""
    p = check_input_file(path, error=error, max_bytes=max_bytes, what=what, field=field)
    try:
        with open(p, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"expected {what}, cannot read it ({exc.strerror})", file=p, field=field) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"expected {what} of at most {max_bytes} bytes, it grew while read", file=p, field=field)
    return data
