"""Drive-log validation: the one implementation behind :func:`sim.log.read_log` and
:func:`sim.log.validate_log`, also used by the scene-bundle loader and the importers.

A drive log is untrusted input (it may come from a shared drive). Three levels of checks, each
raising :class:`~sim.errors.LogFormatError` whose one line names the file, the field path and what
was expected; nothing is read before it is known to be a regular file under a size cap:

* **structure** (:func:`sim.log.read_log`): every JSON file is a regular file of at most
  :data:`MAX_JSON_BYTES`, UTF-8, nested at most :data:`MAX_JSON_DEPTH` deep, and every field has the
  documented type and range (a bool is not an integer; times are int64 microseconds; coordinates
  within :data:`MAX_COORD_M`); every payload a JSON file names is a regular file inside the log
  folder.
* **headers** (``validate_log(..., deep=False)``, ``loopdrive info``): no FIFO, device or socket
  anywhere in the folder; every image and depth map is a complete PNG (ends with its ``IEND``
  chunk) of the size ``transforms.json`` declares, images 8-bit RGB(A), depth maps 16-bit; every
  LiDAR ``.npy`` has a float32 (N, 4) C-order header and exactly the bytes it announces. A few
  hundred bytes are read per file.
* **full** (``validate_log(...)``, ``loopdrive validate-log``, ``recon``, ``eval-recon``): every
  image and depth map decoded, every LiDAR array loaded (never unpickled) and finite.

The readers :func:`read_image`, :func:`read_depth` and :func:`read_lidar` (behind
``DriveLog.image`` / ``depth`` / ``lidar``) make the same checks on the file they read.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from sim.errors import LogFormatError, LoopdriveError
from sim.fsutil import MAX_INPUT_BYTES, check_input_file, read_input_bytes

__all__ = [
    "INT64_MAX",
    "MAX_COORD_M",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LIDAR_BYTES",
    "MAX_LIDAR_RAYS",
    "FieldChecker",
    "check_payloads",
    "check_tree",
    "load_json",
    "read_depth",
    "read_image",
    "read_lidar",
]

#: cap on one JSON file of a log or bundle (bytes).
MAX_JSON_BYTES = MAX_INPUT_BYTES
#: deepest nesting of lists/objects accepted in a JSON file (the formats need 4).
MAX_JSON_DEPTH = 32
#: caps on one image / depth PNG (bytes) and on an image side (pixels).
MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_IMAGE_SIDE = 16384
#: cap on one LiDAR ``.npy`` (bytes; 512 MiB is 33 M points).
MAX_LIDAR_BYTES = 512 * 1024 * 1024
#: cap on beams x azimuth steps of the rig's LiDAR (the ray grid the reconstructor allocates).
MAX_LIDAR_RAYS = 1 << 21
#: largest coordinate magnitude (m) of a position, centreline point or translation.
MAX_COORD_M = 1e7
#: largest box, ego or lane size (m), speed (m/s), focal length (px) or rate (Hz) accepted.
MAX_SIZE = 1e6
INT64_MAX = 2**63 - 1

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_IMAGE_MODES = ("RGB", "RGBA")
_DEPTH_MODES = ("I;16", "I;16B", "I")  # PIL's modes for a 16-bit greyscale PNG
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


def _short(v: Any) -> str:
    s = _repr.repr(v)
    return s[:60] + "..." if len(s) > 60 else s


# ------------------------------------------------------------------------------------------ JSON
def _too_deep(doc: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def load_json(
    path: str | os.PathLike[str],
    *,
    error: type[LoopdriveError] = LogFormatError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The parsed content of a user's JSON file, or ``error`` naming it: not a regular file, over
    ``max_bytes``, not UTF-8, not JSON (numbers with thousands of digits included) or nested more
    than ``max_depth`` deep (refused without a ``RecursionError``)."""
    data = read_input_bytes(path, error=error, max_bytes=max_bytes, what="a JSON file")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise error(f"expected JSON nested at most {max_depth} deep", file=path) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, over-long integers
        raise error(f"expected valid JSON ({_short(str(exc))})", file=path) from None
    if isinstance(doc, dict | list) and _too_deep(doc, max_depth):
        raise error(f"expected JSON nested at most {max_depth} deep", file=path)
    return doc


# --------------------------------------------------------------------------------- field checks
class FieldChecker:
    """Field-path aware type and range checks of one JSON document; each failure raises
    ``error`` (default :class:`LogFormatError`) naming ``file``, the field and what was expected."""

    def __init__(self, file: Path, error: type[LoopdriveError] = LogFormatError) -> None:
        self.file = file
        self.error = error
        self._roots: dict[Path, Path] = {}

    def fail(self, path: str, expected: str, got: Any = None) -> None:
        msg = f"expected {expected}"
        if got is not None:
            msg += f", got {_short(got)}"
        raise self.error(msg, file=self.file, field=path or None)

    def obj(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(path, "an object", type(v).__name__)
        return v

    def key(self, d: Mapping[str, Any], k: str, path: str) -> Any:
        if k not in d:
            self.fail(f"{path}.{k}" if path else k, "this field to be present")
        return d[k]

    def lst(self, v: Any, path: str, min_len: int = 0) -> list[Any]:
        if not isinstance(v, list):
            self.fail(path, "a list", type(v).__name__)
        if len(v) < min_len:
            self.fail(path, f"a list of at least {min_len} item(s)", f"{len(v)} item(s)")
        return v

    def string(self, v: Any, path: str) -> str:
        if not isinstance(v, str) or not v:
            self.fail(path, "a non-empty string", v)
        return v

    def boolean(self, v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            self.fail(path, "true or false", v)
        return v

    def integer(self, v: Any, path: str, lo: int | None = None, hi: int = INT64_MAX) -> int:
        """An int (never a bool or a float) in [``lo``, ``hi``] (default: the int64 range)."""
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(path, "an integer", v)
        lo_ = -INT64_MAX - 1 if lo is None else lo
        if not lo_ <= v <= hi:
            self.fail(path, f"an integer in [{lo_}, {hi}]", v)
        return v

    def number(self, v: Any, path: str, positive: bool = False, limit: float = MAX_COORD_M) -> float:
        """A finite int or float (not a bool) of magnitude at most ``limit``, > 0 if ``positive``."""
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            self.fail(path, "a finite number", v)
        if positive and v <= 0:
            self.fail(path, "a positive number", v)
        if abs(v) > limit:
            self.fail(path, f"a number of magnitude at most {limit:g}", v)
        return float(v)

    def numbers(self, v: Any, path: str, n: int | None = None, positive: bool = False, limit: float = MAX_COORD_M) -> list[float]:
        self.lst(v, path)
        if n is not None and len(v) != n:
            self.fail(path, f"a list of {n} numbers", f"{len(v)} item(s)")
        return [self.number(x, f"{path}[{i}]", positive, limit) for i, x in enumerate(v)]

    def matrix4(self, v: Any, path: str) -> NDArray[np.float64]:
        """A rigid 4x4 transform (orthonormal rotation with det +1, last row [0, 0, 0, 1])."""
        self.lst(v, path)
        if len(v) != 4 or not all(isinstance(r, list) and len(r) == 4 for r in v):
            self.fail(path, "a 4x4 matrix (list of 4 rows of 4 numbers)", v)
        for i, r in enumerate(v):
            self.numbers(r, f"{path}[{i}]", 4)
        m = np.asarray(v, dtype=np.float64)
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            self.fail(f"{path}[3]", "last row [0, 0, 0, 1]", v[3])
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
            self.fail(path, "a rigid transform (orthonormal rotation, det +1)")
        return m

    def file_in(self, root: Path, rel: Any, path: str) -> str:
        """``rel`` if it names a regular file inside ``root`` (no FIFO, device or folder; not read)."""
        rel = self.string(rel, path)
        if "\x00" in rel:
            self.fail(path, "a path without NUL characters", rel)
        base = self._roots.get(root)
        if base is None:
            base = self._roots[root] = root.resolve()
        try:
            p = (root / rel).resolve()
            inside = base in p.parents
            st = os.stat(p) if inside else None
        except FileNotFoundError:
            self.fail(path, "an existing file", rel)
        except (OSError, RuntimeError, ValueError) as exc:
            self.fail(path, f"a readable path ({type(exc).__name__})", rel)
        if st is None:
            self.fail(path, "a path inside the log folder", rel)
        elif not stat.S_ISREG(st.st_mode):
            self.fail(path, "a regular file (not a folder, FIFO or device)", rel)
        return rel


# ------------------------------------------------------------------------------------- payloads
@contextmanager
def _png(path: Path, what: str, max_bytes: int = MAX_IMAGE_BYTES) -> Iterator[Image.Image]:
    """An opened (not decoded) PNG that is a regular file under the cap and ends with ``IEND``."""
    p = check_input_file(path, error=LogFormatError, max_bytes=max_bytes, what=what)
    try:
        with open(p, "rb") as fh:
            fh.seek(max(os.fstat(fh.fileno()).st_size - len(_PNG_END), 0))
            tail = fh.read()
    except OSError as exc:
        raise LogFormatError(f"expected {what}, cannot read it ({exc.strerror})", file=p) from None
    if tail != _PNG_END:
        raise LogFormatError(f"expected {what} (a complete PNG ending with its IEND chunk; truncated?)", file=p)
    try:
        im = Image.open(p, formats=["PNG"])
    except Exception as exc:  # any decoder failure of an untrusted file
        raise LogFormatError(f"expected {what} ({type(exc).__name__}: {_short(str(exc))})", file=p) from None
    try:
        yield im
    finally:
        im.close()


def _decode(im: Image.Image, path: Path, what: str) -> None:
    try:
        im.load()
    except Exception as exc:  # truncated, corrupt or bomb: one clear line
        raise LogFormatError(f"expected {what} ({type(exc).__name__}: {_short(str(exc))})", file=path) from None


def _check_size(im: Image.Image, size: tuple[int, int] | None, path: Path) -> None:
    if size is not None and im.size != size:
        raise LogFormatError(
            f"expected an image of {size[0]}x{size[1]} as transforms.json says, got {im.size[0]}x{im.size[1]}", file=path)


def _check_png(path: Path, size: tuple[int, int] | None, *, deep: bool, what: str, modes: Any) -> None:
    """A PNG of one of ``modes`` and ``size`` (w, h); decoded fully when ``deep``."""
    with _png(path, what) as im:
        if im.mode not in modes:
            raise LogFormatError(f"expected {what}, got mode {im.mode}", file=path)
        _check_size(im, size, path)
        if deep:
            _decode(im, path, what)


def check_image(path: Path, size: tuple[int, int] | None, *, deep: bool) -> None:
    """A camera image: an 8-bit RGB(A) PNG of ``size`` (w, h); decoded fully when ``deep``."""
    _check_png(path, size, deep=deep, what="an 8-bit RGB PNG image", modes=_IMAGE_MODES)


def check_depth(path: Path, size: tuple[int, int] | None, *, deep: bool) -> None:
    """A depth map: a 16-bit greyscale PNG (millimetres) of ``size``; decoded when ``deep``."""
    _check_png(path, size, deep=deep, what="a 16-bit greyscale depth PNG", modes=_DEPTH_MODES)


def read_image(path: Path, size: tuple[int, int] | None = None) -> NDArray[np.uint8]:
    """RGB (H, W, 3) uint8 of a checked camera image (``size``: the declared (w, h))."""
    what = "an 8-bit RGB PNG image"
    with _png(path, what) as im:
        if im.mode not in _IMAGE_MODES:
            raise LogFormatError(f"expected {what}, got mode {im.mode}", file=path)
        _check_size(im, size, path)
        _decode(im, path, what)
        return np.asarray(im.convert("RGB"))


def read_depth(path: Path, size: tuple[int, int] | None = None) -> NDArray[np.float32]:
    """Metric z-depth (H, W) float32 in metres (0 = no return) of a checked 16-bit mm depth PNG."""
    what = "a 16-bit greyscale depth PNG"
    with _png(path, what) as im:
        if im.mode not in _DEPTH_MODES:
            raise LogFormatError(f"expected {what}, got mode {im.mode}", file=path)
        _check_size(im, size, path)
        _decode(im, path, what)
        a = np.asarray(im).astype(np.float32)
    return a / 1000.0


def _lidar(path: Path, *, load: bool, columns: int = 4) -> NDArray[np.float32] | None:
    """Check a LiDAR ``.npy`` (header: float32, C order, shape (N, ``columns``); exact file length)
    without unpickling; with ``load`` read the points and require them finite."""
    what = "a LiDAR .npy file"
    p = check_input_file(path, error=LogFormatError, max_bytes=MAX_LIDAR_BYTES, what=what)
    fmt = np.lib.format
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                version = fmt.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(fh, max_header_size=10000)  # type: ignore[call-arg]  # numpy 1.26 stubs lack it
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(fh, max_header_size=10000)  # type: ignore[call-arg]  # numpy 1.26 stubs lack it
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except (ValueError, EOFError, SyntaxError, TypeError) as exc:  # zero-byte, truncated, garbage header
                raise LogFormatError(f"expected {what} ({_short(str(exc)) or type(exc).__name__})", file=p) from None
            if dtype.kind != "f" or dtype.itemsize != 4 or len(shape) != 2 or shape[1] != columns or fortran:
                order = ", Fortran order" if fortran else ""
                raise LogFormatError(f"expected a float32 array of shape (N, {columns}), got {dtype} {shape}{order}", file=p)
            nbytes = int(shape[0]) * 4 * columns
            if size != fh.tell() + nbytes:
                raise LogFormatError(f"expected {fh.tell() + nbytes} bytes for {shape[0]} points as the header says, "
                                     f"got {size} (truncated or padded)", file=p)
            if not load:
                return None
            buf = bytearray(nbytes)
            if fh.readinto(buf) != nbytes:
                raise LogFormatError(f"expected {nbytes} bytes of points, the file shrank while read", file=p)
    except OSError as exc:
        raise LogFormatError(f"expected {what}, cannot read it ({exc.strerror})", file=p) from None
    a = np.frombuffer(buf, dtype=dtype).reshape(shape).astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise LogFormatError("expected finite values only", file=p)
    return a


def read_lidar(path: Path, columns: int = 4) -> NDArray[np.float32]:
    """(N, 4) float32 points of a checked LiDAR ``.npy``: world x, y, z (m) and intensity (or the
    (N, 2) per-point extra file with ``columns=2``)."""
    a = _lidar(path, load=True, columns=columns)
    assert a is not None
    return a


def check_lidar(path: Path, *, deep: bool, columns: int = 4) -> None:
    """A LiDAR sweep file: header and length always; values loaded and finite when ``deep``."""
    _lidar(path, load=deep, columns=columns)


def check_tree(root: Path) -> None:
    """Refuse a FIFO, device or socket anywhere under ``root`` (symlinked folders are not walked;
    nothing is opened)."""
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            p = Path(folder) / name
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                raise LogFormatError("expected only regular files and folders in a drive log, got a FIFO, device or socket", file=p)


def check_payloads(dl: Any, *, deep: bool) -> None:
    """Check every payload of a read :class:`sim.log.DriveLog` (``headers`` level; ``full`` when
    ``deep``), after refusing any non-regular file in its folder."""
    check_tree(dl.root)
    for fr in dl.frames:
        size = (fr.width, fr.height)
        check_image(dl.root / fr.image_path, size, deep=deep)
        if fr.depth_path is not None:
            check_depth(dl.root / fr.depth_path, size, deep=deep)
    for sw in dl.sweeps:
        check_lidar(dl.root / sw.path, deep=deep)
        if sw.extra_path is not None:
            check_lidar(dl.root / sw.extra_path, deep=deep, columns=2)
            if deep and len(read_lidar(dl.root / sw.extra_path, columns=2)) != len(read_lidar(dl.root / sw.path)):
                raise LogFormatError(f"expected one row per point of {sw.path}", file=dl.root / sw.extra_path)
