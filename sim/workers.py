"""Local worker processes that never outlive the process that started them.

:func:`iter_process_pool` runs ``fn(task, *args, **kwargs)`` for each task on a
``ProcessPoolExecutor`` (``spawn`` start method: safe with threads, numba and torch) and yields the
results in completion order. Every worker runs :func:`die_with_parent` first, so it exits within
about a second when the parent dies, whatever killed the parent (``SIGKILL`` included):

- on Linux the worker asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), then checks that the parent did not die before that call;
- everywhere, a daemon thread polls ``os.getppid()`` every :data:`POLL_S` seconds and ends the
  worker with ``os._exit`` once it changes (the parent died and the worker was re-parented).

The multiprocessing resource tracker (a helper process the ``spawn`` pool starts to clean up its
semaphores) exits by itself once every process holding its pipe -- the parent and the workers --
is gone, so it follows the workers.

When the consumer stops early (an exception in the parent, ``KeyboardInterrupt``, a generator
closed before the end) the pending tasks are cancelled and the workers are terminated instead of
letting them finish episodes nobody will read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["POLL_S", "die_with_parent", "iter_process_pool", "set_parent_death_signal"]

log = logging.getLogger(__name__)

#: how often a worker's watchdog thread checks that its parent is alive (s)
POLL_S = 0.5
_PR_SET_PDEATHSIG = 1
_END = object()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the Linux kernel to send ``sig`` to this process when the thread that created it exits
    (``prctl(PR_SET_PDEATHSIG)``). Returns False where that is not available (other systems,
    no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        prctl.restype = ctypes.c_int
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        return prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):  # pragma: no cover - exotic libc
        return False


def _watch_parent(parent_pid: int, interval_s: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone: nobody reads what this worker would produce
        time.sleep(interval_s)


def die_with_parent(parent_pid: int, interval_s: float = POLL_S) -> None:
    """Make this (worker) process exit when ``parent_pid`` -- its parent -- dies: the kernel's
    parent-death signal on Linux plus a polling daemon thread everywhere (see the module doc).
    Exits at once when the parent is already gone. Meant as a pool ``initializer``."""
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval_s), name="loopdrive-parent-watch", daemon=True).start()


def _terminate(pool: Any) -> None:
    """Cancel what has not started and stop the pool's workers now (running tasks are lost)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + 5.0
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()


def iter_process_pool(
    fn: Callable[..., Any],
    tasks: Iterable[Any],
    workers: int,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    in_flight: int | None = None,
) -> Iterator[Any]:
    """``fn(task, *args, **kwargs)`` for every task on ``workers`` worker processes that die with
    this process, yielded in completion order. At most ``in_flight`` (default ``2 * workers``)
    tasks are submitted at a time, so a kill loses little and memory stays bounded. ``fn`` and the
    arguments must be picklable (module-level functions). An exception raised by ``fn`` propagates
    (after the other workers are stopped)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    kw = dict(kwargs or {})
    limit = max(1, in_flight if in_flight is not None else 2 * workers)
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),))
    finished = False
    try:
        it = iter(tasks)
        pending = set()
        for task in it:
            pending.add(pool.submit(fn, task, *args, **kw))
            if len(pending) >= limit:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(it, _END)
                if nxt is not _END:
                    pending.add(pool.submit(fn, nxt, *args, **kw))
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            log.debug("stopping %d worker processes early", workers)
            _terminate(pool)
