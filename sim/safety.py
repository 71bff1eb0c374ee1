"""Contact between the ego and the other actors: the one implementation of collision and
time-to-collision (TTC), used by the engine every step and by the metrics over a whole episode.

Boxes are oriented rectangles (centre x, y in m, heading rad, length and width in m) moving at
constant velocity along their headings (speed m/s). :func:`contact_interval` gives, per ego-actor
pair, the time interval (s) during which the two boxes overlap -- exact, from the separating axis
theorem (on each of the four axes the projected distance is linear in time), compiled in
:data:`sim.kernels.contact_interval_nb`. From it:

* a **collision** is a pair whose interval contains t = 0 (:func:`in_contact`);
* the engine's per-step **TTC signal** (``SimState.min_ttc``, the env's ``min_ttc_s``) is the
  earliest contact time, ``inf`` beyond :data:`TTC_SIGNAL_HORIZON_S`;
* the ``ttc`` **metric** follows nuPlan and projects on a grid of ``step_s`` (0.1 s): its value is
  the first grid time inside the interval, searched up to the metric's own horizon
  (:func:`first_on_grid`, :data:`sim.metrics.TTC_METRIC_HORIZON_S`).

The two horizons are two quantities, not one constant: the signal horizon bounds what a planner
or a miner is told about contacts far ahead; the metric horizon is the range of the nuPlan-style
score's projection (whose threshold, 0.95 s, lies within it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sim.kernels import contact_interval_nb

__all__ = ["TTC_SIGNAL_HORIZON_S", "contact_interval", "first_on_grid", "in_contact", "signal_ttc"]

F64 = NDArray[np.float64]

#: s: the engine's per-step time-to-collision signal reports contacts up to this far ahead (inf beyond)
TTC_SIGNAL_HORIZON_S = 10.0


def contact_interval(
    ego: tuple[F64, F64, F64, F64],
    ego_size: tuple[float, float],
    actors: tuple[F64, F64, F64, F64],
    actor_size: tuple[F64, F64],
    mask: NDArray[np.bool_],
) -> tuple[F64, F64]:
    """When the ego and each actor overlap, both keeping their velocity.

    Args:
        ego: (x, y, yaw, speed) float64 arrays (B,): world m, rad, m/s along the heading.
        ego_size: (length, width) of the ego, m.
        actors: (x, y, yaw, speed) float64 arrays (B, N).
        actor_size: (length, width) float64 arrays (N,), m.
        mask: (B, N) bool, the pairs to evaluate (others get ``inf`` / ``-inf``).

    Returns:
        ``first`` (B, N): the earliest time t >= 0 (s) of overlap, 0 when they overlap now,
        ``inf`` when never; ``last`` (B, N): when the overlap ends (``-inf`` when never).
    """
    first, last = contact_interval_nb(*ego, float(ego_size[0]), float(ego_size[1]), *actors, *actor_size, mask)
    return first, last


def in_contact(first: F64) -> NDArray[np.bool_]:
    """Pairs that overlap now (a collision), from :func:`contact_interval`'s ``first``."""
    return first <= 0.0


def signal_ttc(first: F64, horizon_s: float = TTC_SIGNAL_HORIZON_S) -> F64:
    """The per-world time-to-collision signal (B,), s: the earliest contact over the actors (axis
    1) when it lies within ``horizon_s``, else ``inf``."""
    ttc = first.min(axis=1)
    return np.where(ttc <= horizon_s, ttc, np.inf)


def first_on_grid(first: F64, last: F64, horizon_s: float, step_s: float) -> F64:
    """nuPlan's projected TTC: the first of the times ``0, step_s, 2 step_s, ...`` up to
    ``horizon_s`` (s) that lies in the contact interval [``first``, ``last``], ``inf`` when none."""
    taus = np.arange(0.0, horizon_s + 1e-9, step_s)
    k = np.searchsorted(taus, first, side="left")
    tau = taus[np.minimum(k, len(taus) - 1)]
    return np.where((k < len(taus)) & (tau <= last), tau, np.inf)
