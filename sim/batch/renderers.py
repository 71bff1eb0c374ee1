"""Sensor backends of batch episodes: the scenario's ``scene.renderer`` or an override, built by
name (mesh, neural, composite), and which observation kinds need one."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sim.errors import LoopdriveError, ScenarioError
from sim.scenario import Episode, scene_for
from sim.spec import ScenarioSpec

log = logging.getLogger(__name__)


def episode_scene(spec: ScenarioSpec) -> Any:
    """The scene object (drive log or synthetic town) a spec runs in, cached per process (shared
    with scenario validation): pass it to ``sim.engine.compile_scenario``."""
    return scene_for(spec)[0]


def _load_scene(engine: Any, ep: Episode) -> Any:
    """The episode's scene, cached per worker process (shared with scenario validation)."""
    return episode_scene(ep.scene_spec())


# ----------------------------------------------------------------------------- sensor backends
#: ``renderer`` value of :func:`drive_episode` meaning "the scenario's ``scene.renderer``"
RENDERER_FROM_SCENARIO = "scenario"


def with_renderer(spec: ScenarioSpec, renderer: str | None) -> ScenarioSpec:
    """``spec`` with ``scene.renderer`` replaced (``None`` keeps it). The name is checked against
    the render-backend registry (:class:`~sim.errors.ScenarioError` listing the known ones)."""
    import dataclasses

    if renderer is None or renderer == spec.scene.renderer:
        return spec
    _renderer_factory(renderer)
    return dataclasses.replace(spec, scene=dataclasses.replace(spec.scene, renderer=renderer))


def _renderer_factory(name: str) -> Any:
    import importlib

    from sim.render.base import RENDERERS

    if name not in RENDERERS:
        # the built-in backends register on import (so an unknown name lists all of them)
        for mod in (name, "mesh", "neural", "composite"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"sim.render.{mod}")
            if name in RENDERERS:
                break
    try:
        return RENDERERS.get(name)
    except LoopdriveError as exc:
        raise ScenarioError(exc.message, field="scene.renderer") from None


def make_renderer(spec: ScenarioSpec, scene: Any = None, name: str | None = None, **options: Any) -> Any:
    """The sensor backend of a scenario, as the env builds it: ``name`` (default
    ``spec.scene.renderer``: ``mesh``, ``neural``, ``composite`` or a registered third-party one)
    constructed by its ``from_scenario`` (scene bundle, actor library and inserted actors'
    ``asset`` s) or from the scene (default :func:`episode_scene`). A neural/composite backend
    without ``scene.bundle`` raises :class:`~sim.errors.ScenarioError` naming that field; a missing
    or unreadable bundle folder a :class:`~sim.errors.BundleError`. Close it after use."""
    spec = with_renderer(spec, name)
    factory = _renderer_factory(spec.scene.renderer)
    if spec.scene.renderer in ("neural", "composite") and spec.scene.bundle is None:
        raise ScenarioError(
            f"renderer {spec.scene.renderer!r} needs a scene bundle: set scene.bundle in the scenario "
            "(a folder made by `loopdrive recon`) or choose --renderer mesh",
            field="scene.bundle",
        )
    if scene is None:
        scene = episode_scene(spec)
    from_scenario = getattr(factory, "from_scenario", None)
    return from_scenario(spec, scene, **options) if from_scenario is not None else factory(scene, **options)


def scenario_rig(spec: ScenarioSpec, scene: Any = None) -> Any:
    """The sensor rig of a scenario's rendered observations (``scene.rig``): ``default`` ->
    :func:`sim.sensors.default_rig` (one front camera 320x192, a 32x1024 LiDAR); ``log`` -> the
    drive log's own rig (:meth:`sim.sensors.SensorRig.from_meta` of its ``meta.json``: every camera
    at its intrinsics and size, and its LiDAR). ``scene``: the loaded scene (default
    :func:`episode_scene`). A ``log`` rig without a drive log, or whose log has no camera, raises
    :class:`~sim.errors.ScenarioError` (field ``scene.rig``)."""
    from sim.sensors import SensorRig, default_rig

    if getattr(spec.scene, "rig", "default") != "log":
        return default_rig()
    if spec.scene.log is None:
        raise ScenarioError("rig 'log' needs a drive log: set scene.log (a synthetic town has no logged rig)", field="scene.rig")
    if scene is None:
        scene = episode_scene(spec)
    meta = getattr(scene, "meta", None)
    rig = meta.get("rig") if isinstance(meta, dict) else None
    if not isinstance(rig, dict) or not rig.get("cameras"):
        raise ScenarioError(f"rig 'log' needs a rig with cameras in {spec.scene.log}/meta.json", field="scene.rig")
    return SensorRig.from_meta(rig)


def _needs_render(kind: str) -> bool:
    if kind in ("ego", "objects"):
        return False
    try:
        from sim.observations import OBSERVATIONS

        return bool(getattr(OBSERVATIONS.get(kind), "needs_render", False))
    except (ImportError, LoopdriveError):
        return False
