"""The ``loopdrive-log`` nerfstudio dataparser: a drive log as nerfstudio cameras + images + depth.

Usable by any nerfstudio method (``ns-train nerfacto --data LOG ... loopdrive-log``) and by the
``loopdrive-recon`` methods. Kept in its own module (importing only nerfstudio's dataparser base,
cameras and scene box) because nerfstudio loads dataparser entry points while its own datamanager
module is still importing.

Frames: nerfstudio world = log world translated by ``-centre`` and scaled by ``scale`` (no
rotation: the log is already z-up). ``dataparser_transform`` / ``dataparser_scale`` record it, and
the ``loopdrive`` metadata entry carries them for :mod:`sim.recon.method`, which works in the
metric log frame. Cameras: ``camera`` is one name (default the rig's first), a comma-separated
list or ``all``, each frame with its own intrinsics and size. Split (:mod:`sim.recon.split`):
frame ``k`` of each camera with ``k % eval_every == 0`` is ``val``/``test``, the rest ``train``.
Camera ``times`` are ``t_us * 1e-6`` s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from sim.log import read_log
from sim.recon.split import select_cameras, split_frames

__all__ = ["LoopdriveLogDataParser", "LoopdriveLogDataParserConfig", "loopdrive_log_dataparser"]


@dataclass
class LoopdriveLogDataParserConfig(DataParserConfig):
    """Read a loopdrive drive log (``sim.log``) for nerfstudio."""

    _target: type = field(default_factory=lambda: LoopdriveLogDataParser)
    data: Path = Path()
    """Drive-log folder."""
    camera: str = ""
    """Cameras of the rig to use: one name (empty: the first), a comma-separated list, or ``all``."""
    eval_every: int = 10
    """Every ``eval_every``-th frame of each camera (its k-th frame with k % eval_every == 0) is held out."""
    center_poses: bool = True
    """Translate so the mean camera position is the origin."""
    auto_scale_poses: bool = True
    """Scale so the farthest camera is at distance 1 (times ``scale_factor``)."""
    scale_factor: float = 1.0
    """Extra scale applied after ``auto_scale_poses``."""
    scene_scale: float = 1.0
    """Half-extent of the nerfstudio scene box, in scaled units."""


@dataclass
class LoopdriveLogDataParser(DataParser):
    config: LoopdriveLogDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: Any) -> DataparserOutputs:
        dl = read_log(self.config.data)
        cams = select_cameras(dl, self.config.camera or None)
        cam = cams[0]
        frames = [f for f in dl.frames if f.camera in set(cams)]
        every = max(int(self.config.eval_every), 1)
        train, held = split_frames(dl, cams, every)
        sel = [dl.frames[i] for i in (train if split == "train" else held)]
        if not sel:
            sel = frames
        pos = np.stack([f.c2w[:3, 3] for f in frames])
        centre = pos.mean(0) if self.config.center_poses else np.zeros(3)
        scale = 1.0
        if self.config.auto_scale_poses:
            scale = 1.0 / max(float(np.abs(pos - centre).max()), 1e-6)
        scale *= self.config.scale_factor
        T = np.eye(4)[:3].copy()
        T[:, 3] = -centre
        c2w = np.stack([f.c2w for f in sel]).copy()
        c2w[:, :3, 3] = (c2w[:, :3, 3] - centre) * scale
        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(c2w[:, :3, :4]).float(),
            fx=torch.tensor([[f.fx] for f in sel], dtype=torch.float32),
            fy=torch.tensor([[f.fy] for f in sel], dtype=torch.float32),
            cx=torch.tensor([[f.cx] for f in sel], dtype=torch.float32),
            cy=torch.tensor([[f.cy] for f in sel], dtype=torch.float32),
            width=torch.tensor([[f.width] for f in sel], dtype=torch.int32),
            height=torch.tensor([[f.height] for f in sel], dtype=torch.int32),
            camera_type=CameraType.PERSPECTIVE,
            times=torch.tensor([f.t_us * 1e-6 for f in sel], dtype=torch.float32),
        )
        s = self.config.scene_scale
        metadata: dict[str, Any] = {
            "loopdrive": {
                "log": str(Path(self.config.data).resolve()),
                "camera": cam,
                "cameras": cams,
                "eval_every": every,
                "frame_indices": [f.index for f in sel],
                "centre": centre.tolist(),
                "scale": scale,
            }
        }
        if all(f.depth_path is not None for f in sel):
            metadata["depth_filenames"] = [dl.root / str(f.depth_path) for f in sel]
            metadata["depth_unit_scale_factor"] = 1e-3
        return DataparserOutputs(
            image_filenames=[dl.root / f.image_path for f in sel],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
            metadata=metadata,
            dataparser_transform=torch.from_numpy(T).float(),
            dataparser_scale=float(scale),
        )


loopdrive_log_dataparser = DataParserSpecification(
    config=LoopdriveLogDataParserConfig(), description="A loopdrive drive log (sim.log format)."
)
