"""Meshes of the synthetic town (built with numpy + trimesh, no GL), one import point for the three
modules that build them:

* :mod:`sim.synth.parts` -- the :class:`Part` record, LiDAR :data:`MATERIALS`, baked shading and
  the primitive builders;
* :mod:`sim.synth.town_mesh` -- the static town (:func:`build_static_town`, :class:`StaticTown`);
* :mod:`sim.synth.actor_mesh` -- procedural actor models by class (:func:`actor_parts`) and the
  asset export (:func:`export_assets`).

Geometry is in metres; the static town is in the world frame (z up), actor models in the actor's
box frame (x forward, y left, z up, origin at the box's bottom centre).
"""

from __future__ import annotations

from sim.synth.actor_mesh import actor_parts, export_assets, id_colour
from sim.synth.parts import (
    MATERIAL_IDS,
    MATERIALS,
    SUN,
    Part,
    box_part,
    cylinder_part,
    flat_part,
    hexahedron,
    kerb_walls,
    merge_parts,
    parts_to_trimesh,
    quad_part,
    sky_shade,
    sphere_part,
    sun_shade,
    transform_part,
)
from sim.synth.town_mesh import StaticTown, build_static_town

__all__ = [
    "MATERIALS",
    "MATERIAL_IDS",
    "SUN",
    "Part",
    "StaticTown",
    "actor_parts",
    "box_part",
    "build_static_town",
    "cylinder_part",
    "export_assets",
    "flat_part",
    "hexahedron",
    "id_colour",
    "kerb_walls",
    "merge_parts",
    "parts_to_trimesh",
    "quad_part",
    "sky_shade",
    "sphere_part",
    "sun_shade",
    "transform_part",
]
