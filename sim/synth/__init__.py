"""The ground-truth synthetic town: a procedural road network with lane map, buildings and props,
traffic (vehicles, cyclists, pedestrians, parked cars) and an ego drive, from a preset and a seed.

``make_scene`` is render-free (fast, deterministic per seed); ``write_synth_log`` renders it with the
mesh renderer into a drive log.
"""

from sim.synth.presets import PRESETS, TownPreset, get_preset
from sim.synth.scene import EGO_SIZE, SynthScene, make_scene, world_from_tracks
from sim.synth.writer import write_synth_log

__all__ = [
    "EGO_SIZE",
    "PRESETS",
    "SynthScene",
    "TownPreset",
    "get_preset",
    "make_scene",
    "world_from_tracks",
    "write_synth_log",
]
