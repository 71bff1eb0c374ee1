"""loopdrive's reference planners (:mod:`agents.planners`), learned policies (:mod:`agents.bc`,
:mod:`agents.sb3_planner`) and their training.

The planner interface they implement lives in the simulator, :mod:`sim.planning`; each planner and
trainer here registers through the ``loopdrive.planners`` / ``loopdrive.trainers`` entry-point
groups (``pyproject.toml``) exactly like a third-party plug-in, so ``sim`` never imports this
package.
"""
