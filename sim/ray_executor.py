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

If the process is killed, Ray's processes die with it (Ray starts them with the kernel's
parent-death signal on Linux and its reaper elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
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


def _child_pids() -> set[int]:
    """Process ids of this process's children (Linux ``/proc``; psutil elsewhere when installed)."""
    me = os.getpid()
    if os.path.isdir("/proc/self"):
        out = set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == me:
                out.add(int(d))
        return out
    try:  # pragma: no cover - non-Linux
        import psutil

        return {p.pid for p in psutil.Process(me).children()}
    except Exception:  # pragma: no cover
        return set()


def _stop(pids: Iterable[int], grace_s: float = 5.0) -> None:
    """SIGTERM the given processes (children this process started), SIGKILL what is left after
    ``grace_s`` seconds, and reap them."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                alive.discard(pid)
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(pid, 0)


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


def _start_local(ray: Any, workers: int) -> Path:
    """Start a local Ray instance for ``workers`` CPUs (retrying, see the module doc); returns its
    temporary folder."""
    reason = ""
    for attempt in range(1, START_ATTEMPTS + 1):
        temp = _temp_dir()
        before = _child_pids()
        t0 = time.monotonic()
        try:
            with _environ(RAY_ENV_DEFAULTS):
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
            return temp
        except Exception as exc:  # ray raises bare Exceptions on a failed start
            with contextlib.suppress(Exception):
                ray.shutdown()
            _stop(_child_pids() - before)
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
    if address:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise RayStartError(f"could not join the Ray cluster at {address}: {_one_line(exc)}", field="executor") from None
    else:
        temp = _start_local(ray, workers)
    try:
        yield ray
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
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

