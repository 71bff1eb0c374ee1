"""The neural scene reconstructor: a UniSim-style decomposed NeRF, registered as a nerfstudio method.

* :mod:`sim.recon.scene` -- the scene model in pure torch (background hash grid + occupancy
  sampling, per-actor fields in box frames, sky, CNN decoder, LiDAR head) and its render API.
* :mod:`sim.recon.data` -- a drive log turned into training tensors and the occupancy grid.
* :mod:`sim.recon.train` -- batches, losses and a plain training loop.
* :mod:`sim.recon.method` -- the nerfstudio dataparser, datamanager, model and method configs
  (``loopdrive-recon``, ``loopdrive-recon-quick``, dataparser ``loopdrive-log``). The only module of
  the project that imports nerfstudio; nothing here imports it at package import time.
* :mod:`sim.recon.bundle` -- scene bundles (safetensors + JSON, never pickle).
* :mod:`sim.recon.evaluate` -- the realism evaluation behind ``loopdrive eval-recon``.
"""
