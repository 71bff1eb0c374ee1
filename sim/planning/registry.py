"""The planner registry: name -> :class:`~sim.planning.Planner` subclass.

Every planner -- loopdrive's reference planners as much as a third party's -- registers through
the ``loopdrive.planners`` entry-point group of its distribution::

    [project.entry-points."loopdrive.planners"]
    my_planner = "my_package.planner:MyPlanner"

The group is read the first time a name is looked up or the names are listed, whatever was
imported before; tests may also :meth:`~sim.registry.Registry.register` a class in code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sim.planning.interface import Planner
from sim.registry import Registry

__all__ = ["PLANNERS", "make_planner", "planner_class", "with_opt_ins", "with_opt_ins_episodes"]

#: name -> Planner subclass (entry-point group ``loopdrive.planners``)
PLANNERS: Registry[type[Planner]] = Registry("planner", "loopdrive.planners")


def planner_class(name: str) -> type[Planner]:
    """The planner class registered as ``name`` (``RegistryError`` lists the known ones)."""
    return PLANNERS.get(name)


def make_planner(name: str, **params: Any) -> Planner:
    """Construct a registered planner by name (``RegistryError`` lists the known ones)."""
    return PLANNERS.get(name)(**params)


def with_opt_ins(planner: str, params: Mapping[str, Any] | None, *, trust_pickle: bool) -> dict[str, Any]:
    """``params`` of ``planner`` with the command line's opt-ins (``--trust-pickle``) added where
    the planner takes them (:meth:`Planner.with_opt_ins`), checked now: a missing input file
    (:meth:`Planner.check_input_files`) or an unusable policy file raises here, before any output
    is written. Other planners' params come back unchanged."""
    prm = dict(params or {})
    out = _checked(planner, prm, trust_pickle) if planner in PLANNERS else None
    return prm if out is None else out


def _checked(planner: str, params: dict[str, Any], trust_pickle: bool) -> dict[str, Any] | None:
    """:meth:`Planner.check_input_files`, then :meth:`Planner.with_opt_ins`."""
    cls = PLANNERS.get(planner)
    cls.check_input_files(params)
    return cls.with_opt_ins(params, trust_pickle=trust_pickle)


def with_opt_ins_episodes(episodes: Iterable[Any], *, planner: str | None = None, trust_pickle: bool) -> list[Any]:
    """The episodes of a batch (``sim.scenario.Episode``) with :func:`with_opt_ins` applied to
    those driven by a planner that takes opt-ins (``planner`` overrides each episode's own, as in
    ``sim.batch.run_batch``); each distinct parameter set is checked once (its input files too)."""
    out = []
    checked: dict[str, dict[str, Any] | None] = {}
    for ep in episodes:
        name = planner or ep.planner
        if name in PLANNERS:
            params = dict(ep.planner_params if name == ep.planner else {})
            key = repr((name, sorted((k, repr(v)) for k, v in params.items())))
            if key not in checked:
                checked[key] = _checked(name, params, trust_pickle)
            done = checked[key]
            if done is not None:
                ep = ep.with_planner(name, dict(done))
        out.append(ep)
    return out
