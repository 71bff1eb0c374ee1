"""nuScenes importer: one scene of a nuScenes data root -> a loopdrive drive log.

``loopdrive import nuscenes ROOT --scene NAME --out LOG [--cameras all|CAM_FRONT,...] [--sweeps]``
(or :func:`import_nuscenes`) reads the JSON tables of ``ROOT/<version>/`` directly (``scene``,
``log``, ``sample``, ``sample_data``, ``ego_pose``, ``calibrated_sensor``, ``sensor``,
``sample_annotation``, ``instance``, ``category``) and the files under ``samples/`` and
``sweeps/``; the nuScenes devkit is not needed. What it writes:

* **every chosen camera and ``LIDAR_TOP``**: the key frames (2 Hz), and with ``--sweeps`` every
  capture between them (cameras 12 Hz, LiDAR 20 Hz). Each frame and sweep keeps **its own time
  stamp and its own ego pose** (nuScenes has an ``ego_pose`` per capture); the ego track holds
  the ego pose at every imported capture.
* **frames**: the world frame is nuScenes' global frame shifted so the first key frame's ego
  position is the origin (UTM-like coordinates lose float32 precision in LiDAR arrays), and
  ``t_us`` is the time stamp minus the earliest imported one; both shifts are recorded in
  ``meta.json`` ``origin: {"global_offset_m": [x, y, z], "t0_us": int}`` (global = world +
  offset, absolute time = ``t_us`` + ``t0_us``), which ``loopdrive serve``'s neurad protocol
  uses to answer in global coordinates and absolute time.
* **cameras** (``meta.rig.cameras``, named by channel): full intrinsics ``fx``, ``fy``, ``cx``,
  ``cy`` from ``camera_intrinsic`` (a skewed matrix is refused) and the full mount rotation, roll
  included (``calibrated_sensor`` is sensor-to-ego with OpenCV axes; the log's
  ``transform_matrix`` is camera-to-world with OpenGL axes); :class:`sim.sensors.SensorRig`
  keeps both. Images are re-encoded as PNG; no depth maps are written.
* **the LiDAR** (``meta.rig.lidar``): beams from the ring index, a per-ring elevation table,
  azimuth steps, range, mount and firing model measured from the key-frame sweeps, so the
  reconstructor builds LiDAR rays, depth supervision and its occupancy grid from them; points in
  the world frame (intensity 0..255 scaled to [0, 1]) with ring and an estimated firing time per
  point (``lidar/<i>.extra.npy``). Motion compensation: none is added -- a ``.pcd.bin`` is already
  in the LiDAR frame at the sweep's time stamp; see :mod:`sim.importers.nuscenes.lidar`.
* **actors**: one track per ``instance`` whose id is the **instance token**, sampled at the
  annotation key frames; an instance unannotated for longer than ``max_gap_s``
  (:data:`MAX_GAP_S` = 1.5 s) continues as a new track ``<token>-2`` instead of being
  interpolated through the gap; see :mod:`sim.importers.nuscenes.tracks`.
* the lane map is one lane along the ego's path (the lane graph lives in nuScenes' map expansion,
  which is not read).

The data set is untrusted input: each table is read through the drive log's size- and
nesting-capped JSON reader (at most :data:`MAX_TABLE_BYTES`) and every record field the importer
uses is checked (:data:`FIELDS`) before any conversion; the files a record names must be regular
files inside the data root (images JPEG/PNG, LiDAR float32 (N, 5) with whole ring numbers, both
size-capped). A problem raises :class:`~sim.errors.LogFormatError` naming the table (or file) and
the field, before the output folder is made.
"""

from __future__ import annotations

from sim.importers.nuscenes.importer import EGO_SIZE, import_nuscenes, parse_cameras
from sim.importers.nuscenes.tables import FIELDS, MAX_TABLE_BYTES
from sim.importers.nuscenes.tracks import CLASS_MAP, MAX_GAP_S
from sim.importers.registry import IMPORTERS

__all__ = ["CLASS_MAP", "EGO_SIZE", "FIELDS", "MAX_GAP_S", "MAX_TABLE_BYTES", "import_nuscenes", "parse_cameras"]

IMPORTERS.register("nuscenes", import_nuscenes)
