"""Batch tasks on Ray: a local instance started for one run, or a cluster joined by address.

A local instance is started for the run and shut down after it (:func:`ray_session`), made to start
on a small, busy machine:

- minimal components: no dashboard, no usage statistics (``RAY_USAGE_STATS_ENABLED=0``), no
  driver log forwarding, ``num_cpus`` = the number of workers, a 512 MiB object store (the outcomes
  are small; Ray's default maps 30 % of the RAM), ``address="local"`` so that a run never joins
  another user's instance by accident;
- its own temporary folder (logs, sockets, spill files; removed after the run);
- longer start-up deadlines through Ray's configuration variables (:data:`RAY_ENV_DEFAULTS`,
  only where the user has not set them): worker registration and agent registration;
- retries: Ray's raylet gives its dashboard agent a fixed 15 s to report its ports and aborts when
  the agent, importing Python on a loaded CPU, misses it (ray-project/ray#65983; no setting
  changes it in the Ray versions this was written against). A failed attempt's processes are
  stopped (by process id: only the children this process started) and the start is retried
  :data:`START_ATTEMPTS` times; the final error quotes the raylet's own reason from its log and
  keeps that attempt's logs.

If the process is killed, Ray's processes die with it: Ray starts its own with the kernel's
parent-death signal on Linux (its reaper elsewhere), and the workers die with the raylet. Ray's
two agents (children of the raylet) would outlive it by about a minute, reporting the raylet's
death to a GCS that is gone too; a small watchdog process started with the instance
(:data:`_WATCHDOG`, Linux) stops every process of the instance as soon as the pipe from this
process reaches end of file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sim.errors import ScenarioError

__all__ = ["RAY_ENV_DEFAULTS", "START_ATTEMPTS", "RayStartError", "iter_ray", "ray_session"]

log = logging.getLogger(__name__)

#: Ray configuration set (unless already in the environment) while a local instance starts; its
#: processes inherit them. Only deadlines that a busy machine misses while nothing is wrong are
#: raised: longer GCS request or raylet-registration deadlines would only make a failed start
#: take minutes to be noticed (each failed attempt costs about a minute with Ray's own).
RAY_ENV_DEFAULTS: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # a worker process importing Ray (and, for its first task, loopdrive) on a loaded CPU (s)
    "RAY_worker_register_timeout_seconds": "300",
    # the raylet's connection to its runtime-env agent; also the agents' port files in Ray
    # versions that fixed ray-project/ray#65983 (ms)
    "RAY_agent_register_timeout_ms": "120000",
}
#: attempts at starting a local instance before giving up
START_ATTEMPTS = 3
#: object-store size of a local instance (bytes)
OBJECT_STORE_BYTES = 512 * 1024 * 1024
_SOCKET_ROOM = 40  # longest temp-folder path that keeps Ray's socket paths under 107 bytes


class RayStartError(ScenarioError):
    """Ray could not be started or joined (field ``executor``)."""


@contextlib.contextmanager
def _environ(defaults: Mapping[str, str]) -> Iterator[None]:
    """Set the ``defaults`` missing from ``os.environ`` for the block, then remove them again."""
    added = [k for k in defaults if k not in os.environ]
    for k in added:
        os.environ[k] = defaults[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


#: Ray loggers whose start-up notices are not for loopdrive's users (token authentication being
#: on for a new local instance is what we want; it is said on every start)
_RAY_NOTICES = ("ray._private.authentication.authentication_token_setup",)


@contextlib.contextmanager
def _quiet(names: Iterable[str]) -> Iterator[None]:
    """Raise the given loggers to ERROR for the block."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks) of every process (Linux ``/proc``; empty
    elsewhere)."""
    table: dict[int, tuple[int, int]] = {}
    if not os.path.isdir("/proc/self"):
        return table
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 19 and fields[0] != b"Z":  # state, ppid, ..., starttime (field 22)
            table[int(d)] = (int(fields[1]), int(fields[19]))
    return table


def _descendants(root: int | None = None) -> dict[int, int]:
    """Live descendants of ``root`` (default this process): pid -> start time (clock ticks), so
    that a pid reused later by another process is not mistaken for one of them. On systems
    without ``/proc`` only the children psutil reports (when installed), start time 0."""
    root = os.getpid() if root is None else root
    table = _proc_table()
    if not table:  # pragma: no cover - non-Linux
        try:
            import psutil

            return {p.pid: 0 for p in psutil.Process(root).children(recursive=True)}
        except Exception:
            return {}
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    todo = list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out:
            out[pid] = table[pid][1]
            todo.extend(kids.get(pid, []))
    return out


def _alive(procs: Mapping[int, int]) -> set[int]:
    """The processes of ``procs`` (pid -> start time) still running (children reaped on the way)."""
    for pid in procs:
        with contextlib.suppress(OSError):
            os.waitpid(pid, os.WNOHANG)  # a child of ours that exited: reap it
    table = _proc_table()
    if not table:  # pragma: no cover - non-Linux: signal 0 tells whether the pid exists
        out = set()
        for pid in procs:
            with contextlib.suppress(OSError):
                os.kill(pid, 0)
                out.add(pid)
        return out
    return {pid for pid, t0 in procs.items() if pid in table and (not t0 or table[pid][1] == t0)}


def _stop(procs: Mapping[int, int], grace_s: float = 5.0) -> None:
    """SIGTERM the given processes (pid -> start time: ones this process started, directly or
    not), SIGKILL those left after ``grace_s`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _alive(procs):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while _alive(procs) and time.monotonic() < deadline:
            time.sleep(0.1)


#: the watchdog (``python -c``) that stops a local Ray instance when the process that started it
#: dies: it gets the instance's temporary folder and its processes as ``pid:starttime`` arguments
#: and waits on a pipe from the parent; end of file without ``done`` (the parent died, however) ->
#: SIGTERM, then SIGKILL after 3 s, to those of them still running (same pid *and* start time),
#: then the folder is removed
_WATCHDOG = """\
import os, shutil, signal, sys, time
temp = sys.argv[1]
procs = dict(tuple(map(int, a.split(":"))) for a in sys.argv[2:])
if sys.stdin.buffer.read().startswith(b"done"):
    sys.exit(0)
def alive():
    out = []
    for pid, t0 in procs.items():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        if fields[0] != b"Z" and int(fields[19]) == t0:
            out.append(pid)
    return out
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in alive():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    end = time.monotonic() + 3
    while alive() and time.monotonic() < end:
        time.sleep(0.1)
if temp:
    shutil.rmtree(temp, ignore_errors=True)
"""


def _start_watchdog(procs: Mapping[int, int], temp: Path | None = None) -> subprocess.Popen[bytes] | None:
    """Start the :data:`_WATCHDOG` over ``procs`` and the folder ``temp`` (Linux; None elsewhere
    or when it cannot start). Its stdin is the pipe: write ``done`` and close it once the instance
    is shut down."""
    if not procs or not os.path.isdir("/proc/self"):
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(temp or ""), *(f"{p}:{t}" for p, t in procs.items())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:  # pragma: no cover
        log.warning("no watchdog for the Ray instance (%s): if this process is killed, Ray's agents may "
                    "outlive it by a minute", exc)
        return None


def _end_watchdog(dog: subprocess.Popen[bytes] | None) -> None:
    if dog is None:
        return
    with contextlib.suppress(OSError, ValueError):
        assert dog.stdin is not None
        dog.stdin.write(b"done")
        dog.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        dog.wait(timeout=10)


def _temp_dir() -> Path:
    base = tempfile.gettempdir()
    if len(base) > _SOCKET_ROOM:
        base = "/tmp" if os.path.isdir("/tmp") else base
    return Path(tempfile.mkdtemp(prefix="loopdrive-ray-", dir=base))


def _raylet_reason(temp: Path) -> str:
    """The raylet's own reason for a failed start, from its log in ``temp`` ('' when none)."""
    for log_file in sorted(temp.glob("session_*/logs/raylet.*")):
        try:
            text = log_file.read_text(encoding="utf-8", errors="replace")[-200_000:]
        except OSError:
            continue
        m = re.search(r"Timed out waiting for file \S*?([a-z_]+_port)_[0-9a-f]+", text)
        if m:
            return f"the raylet timed out waiting for its agent's {m.group(1)} file"
        m = re.search(r"Check failed: (.{0,160})", text)
        if m:
            return f"the raylet stopped: {m.group(1).strip()}"
    return ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _start_local(ray: Any, workers: int) -> tuple[Path, subprocess.Popen[bytes] | None]:
    """Start a local Ray instance for ``workers`` CPUs (retrying, see the module doc); returns its
    temporary folder and the watchdog that stops its processes if this process dies."""
    reason = ""
    for attempt in range(1, START_ATTEMPTS + 1):
        temp = _temp_dir()
        before = _descendants()
        t0 = time.monotonic()
        try:
            with _environ(RAY_ENV_DEFAULTS), _quiet(_RAY_NOTICES):
                ray.init(
                    address="local",
                    num_cpus=max(1, workers),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    object_store_memory=OBJECT_STORE_BYTES,
                    _temp_dir=str(temp),
                )
            log.info("local Ray instance started in %.1f s (attempt %d)", time.monotonic() - t0, attempt)
            now = _descendants()
            return temp, _start_watchdog({p: t for p, t in now.items() if before.get(p) != t}, temp)
        except Exception as exc:  # ray raises bare Exceptions on a failed start
            with contextlib.suppress(Exception):
                ray.shutdown()
            _stop({p: t for p, t in _descendants().items() if before.get(p) != t})
            why = _raylet_reason(temp)
            reason = f"{_one_line(exc)}{f' ({why})' if why else ''}"
            if attempt == START_ATTEMPTS:
                raise RayStartError(
                    f"could not start a local Ray instance in {START_ATTEMPTS} attempts: {reason}; its logs "
                    f"are in {temp}. Ray's raylet gives its agents a fixed 15 s to start (ray-project/ray#65983), "
                    "which a busy machine can miss: try again when it is less loaded, start Ray with "
                    "`ray start --head` and pass --ray-address, or use --executor local",
                    field="executor",
                ) from None
            log.warning("starting Ray failed (attempt %d of %d): %s; retrying", attempt, START_ATTEMPTS, reason)
            shutil.rmtree(temp, ignore_errors=True)
            time.sleep(5.0 * attempt)  # a quieter moment, maybe
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def ray_session(workers: int, address: str | None = None) -> Iterator[Any]:
    """The ``ray`` module, initialised for one run: the caller's instance when Ray is already
    initialised in this process (left running), the cluster at ``address`` (joined, then left),
    or a local instance for ``workers`` CPUs (started as described in the module doc, shut down
    and its folder removed afterwards). Raises :class:`RayStartError` when none can be had."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency
        raise RayStartError(f"the ray executor needs the 'ray' package ({exc})", field="executor") from None
    if ray.is_initialized():
        yield ray
        return
    temp: Path | None = None
    dog: subprocess.Popen[bytes] | None = None
    if address:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise RayStartError(f"could not join the Ray cluster at {address}: {_one_line(exc)}", field="executor") from None
    else:
        temp, dog = _start_local(ray, workers)
    try:
        yield ray
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        _end_watchdog(dog)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def iter_ray(
    fn: Callable[..., Any],
    tasks: Iterable[Any],
    workers: int,
    address: str | None = None,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """``fn(task, *args, **kwargs)`` for every task as Ray tasks (one CPU each, no retries) in a
    :func:`ray_session`, yielded in completion order, at most ``2 * workers`` in flight."""
    kw = dict(kwargs or {})
    with ray_session(workers, address) as ray:
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        it = iter(tasks)
        pending: list[Any] = []
        limit = max(1, 2 * workers)
        for task in it:
            pending.append(remote.remote(task, *args, **kw))
            if len(pending) >= limit:
                break
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield ray.get(ref)
                    for task in it:
                        pending.append(remote.remote(task, *args, **kw))
                        break
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

