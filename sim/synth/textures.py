"""Procedural textures (numpy only): value-noise fBm, asphalt, concrete tiles, grass, paint, facades,
roofs, bark and the sky.

All functions take an explicit :class:`numpy.random.Generator` and return ``uint8`` RGB images
(H, W, 3); same generator state -> identical image. Colours are the final (unlit) albedo because
the mesh renderer bakes a fixed sun shading into vertex colours and renders flat.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "asphalt",
    "bark",
    "concrete_tiles",
    "facade",
    "fbm",
    "grass",
    "paint",
    "roof",
    "sky_clouds",
]

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]


def fbm(shape: tuple[int, int], rng: np.random.Generator, base_cells: int = 4, octaves: int = 5, gain: float = 0.5) -> F32:
    """Fractal value noise in [-1, 1] approximately: ``octaves`` layers of bilinearly upsampled
    random grids, the first with ``base_cells`` cells across the longer side."""
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    amp, total = 1.0, 0.0
    cells = base_cells
    for _ in range(octaves):
        gh = max(2, int(np.ceil(cells * h / max(h, w))) + 2)
        gw = max(2, int(np.ceil(cells * w / max(h, w))) + 2)
        g = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
        out += amp * _resize(g, (h, w))
        total += amp
        amp *= gain
        cells *= 2
        if cells > max(h, w) / 2:
            break
    return out / total


def _resize(a: F32, shape: tuple[int, int]) -> F32:
    """Bilinear resize of a float32 image to ``shape`` (H, W) (PIL, fast)."""
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(im.resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float32)


def _grain(rng: np.random.Generator, shape: tuple[int, int]) -> F32:
    """Per-pixel standard-normal grain (float32)."""
    return rng.standard_normal(size=shape, dtype=np.float32)


def _to_u8(a: NDArray[np.floating]) -> U8:
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def asphalt(shape: tuple[int, int], rng: np.random.Generator, m_per_px: float) -> U8:
    """Dark grey asphalt: grain, large-scale wear, darker repair patches and thin cracks."""
    h, w = shape
    extent = max(h, w) * m_per_px
    low = fbm(shape, rng, base_cells=max(2, int(extent / 25)), octaves=4)
    mid = fbm(shape, rng, base_cells=max(4, int(extent / 3)), octaves=3)
    grain = _grain(rng, shape)
    v = 0.30 + 0.035 * low + 0.03 * mid + 0.035 * grain
    # tar patches (darker) where a slow noise is high
    patch = fbm(shape, rng, base_cells=max(3, int(extent / 12)), octaves=3)
    v = np.where(patch > 0.33, v * 0.78, v)
    # cracks: random walks of 1.2 px steps (vectorised over cracks and steps)
    n_cracks = int(extent * extent / 400) + 4
    steps = 120
    length = rng.integers(20, steps, size=n_cracks)
    ang = rng.uniform(0, 2 * np.pi, size=(n_cracks, 1)) + np.cumsum(rng.normal(0, 0.35, size=(n_cracks, steps)), axis=1)
    x = rng.uniform(0, w, size=(n_cracks, 1)) + np.cumsum(np.cos(ang) * 1.2, axis=1)
    y = rng.uniform(0, h, size=(n_cracks, 1)) + np.cumsum(np.sin(ang) * 1.2, axis=1)
    keep = np.arange(steps)[None, :] < length[:, None]
    xi, yi = x[keep].astype(np.int64) % w, y[keep].astype(np.int64) % h
    crack = np.ones(shape, dtype=np.float32)
    crack[yi, xi] = 0.55
    v = v * crack
    tint = np.array([1.0, 1.0, 1.04], dtype=np.float32)
    return _to_u8(v[..., None] * tint)


def concrete_tiles(shape: tuple[int, int], rng: np.random.Generator, m_per_px: float, tile_m: float = 1.5) -> U8:
    """Light concrete sidewalk slabs with joints every ``tile_m`` metres (world-aligned)."""
    h, w = shape
    yy = (np.arange(h, dtype=np.float32) + 0.5) * m_per_px
    xx = (np.arange(w, dtype=np.float32) + 0.5) * m_per_px
    ti, tj = np.floor(yy / tile_m).astype(np.int64), np.floor(xx / tile_m).astype(np.int64)
    tile_val = rng.normal(0.0, 0.03, size=(int(ti[-1]) + 1, int(tj[-1]) + 1)).astype(np.float32)
    v = 0.62 + tile_val[ti[:, None], tj[None, :]] + 0.03 * fbm(shape, rng, base_cells=max(4, int(max(h, w) * m_per_px / 6)), octaves=4)
    v += 0.025 * _grain(rng, shape)
    jw = max(0.025, 0.5 * m_per_px)
    jy = np.minimum(yy % tile_m, tile_m - yy % tile_m) < jw
    jx = np.minimum(xx % tile_m, tile_m - xx % tile_m) < jw
    v = np.where(jy[:, None] | jx[None, :], v * 0.72, v)
    tint = np.array([1.0, 0.985, 0.95], dtype=np.float32)
    return _to_u8(v[..., None] * tint)


def grass(shape: tuple[int, int], rng: np.random.Generator, m_per_px: float) -> U8:
    """Lawn: green with patchy variation, dry spots and blade-scale grain."""
    extent = max(shape) * m_per_px
    low = fbm(shape, rng, base_cells=max(2, int(extent / 20)), octaves=4)
    mid = fbm(shape, rng, base_cells=max(4, int(extent / 2)), octaves=3)
    grain = _grain(rng, shape)
    g = 0.42 + 0.06 * low + 0.05 * mid + 0.05 * grain
    dry = np.clip((fbm(shape, rng, base_cells=max(3, int(extent / 15)), octaves=3) - 0.2) * 3.0, 0.0, 1.0)
    r = 0.22 + 0.05 * low + 0.25 * dry + 0.03 * grain
    b = 0.12 + 0.03 * mid + 0.05 * dry
    return _to_u8(np.stack([r, g, b], axis=-1))


def paint(shape: tuple[int, int], rng: np.random.Generator, color: tuple[float, float, float]) -> U8:
    """Road paint of ``color`` (RGB 0..1) with wear (asphalt showing through) and grain."""
    wear = fbm(shape, rng, base_cells=8, octaves=4)
    grain = _grain(rng, shape)
    a = np.clip(0.92 - np.clip(wear - 0.25, 0.0, 1.0) * 1.6 + 0.03 * grain, 0.3, 1.0)
    c = np.asarray(color, dtype=np.float32)
    bg = np.float32(0.3)
    return _to_u8(a[..., None] * c + (1.0 - a[..., None]) * bg)


def roof(shape: tuple[int, int], rng: np.random.Generator) -> U8:
    """Flat gravel/bitumen roof."""
    v = 0.42 + 0.05 * fbm(shape, rng, base_cells=6, octaves=4) + 0.05 * _grain(rng, shape)
    return _to_u8(v[..., None] * np.array([1.0, 0.98, 0.95], dtype=np.float32))


def bark(shape: tuple[int, int], rng: np.random.Generator) -> U8:
    """Tree bark: brown with vertical streaks."""
    h, w = shape
    streak = _resize(rng.uniform(-1, 1, size=(4, w // 2 + 2)).astype(np.float32), (h, w))
    v = 0.30 + 0.08 * streak + 0.04 * _grain(rng, shape)
    return _to_u8(v[..., None] * np.array([1.0, 0.78, 0.55], dtype=np.float32))


def facade(rng: np.random.Generator, bays: int, floors: int, px_per_m: float = 24.0,
           bay_w: float = 3.0, floor_h: float = 3.2) -> U8:
    """A building facade of ``bays`` x ``floors`` window bays (repeatable horizontally).

    Wall colour, window size, frame colour, sills and the glass tint vary with ``rng``; ground-floor
    bays get shop windows or a door. Rows are top-to-bottom in the image (row 0 = roof line).
    """
    bw, fh = round(bay_w * px_per_m), round(floor_h * px_per_m)
    h, w = fh * floors, bw * bays
    palette = np.array([
        [0.80, 0.76, 0.68], [0.70, 0.55, 0.45], [0.62, 0.64, 0.66], [0.86, 0.83, 0.76],
        [0.55, 0.36, 0.30], [0.75, 0.70, 0.58], [0.52, 0.55, 0.58], [0.88, 0.86, 0.82],
        [0.65, 0.48, 0.36], [0.72, 0.74, 0.70],
    ], dtype=np.float32)
    wall = palette[int(rng.integers(len(palette)))] * np.float32(rng.uniform(0.9, 1.05))
    img = np.ones((h, w, 3), dtype=np.float32) * wall
    img *= (1.0 + 0.05 * fbm((h, w), rng, base_cells=6, octaves=4))[..., None]
    img *= (1.0 + 0.03 * rng.normal(0, 1, size=(h, w)).astype(np.float32))[..., None]
    brick = rng.uniform() < 0.35
    if brick:
        yy, xx = np.mgrid[0:h, 0:w]
        course = (yy // 3) % 2
        mortar = ((yy % 3) == 0) | (((xx + course * 4) % 8) == 0)
        img[mortar] *= 0.85
    win_w = rng.uniform(0.35, 0.6) * bw
    win_h = rng.uniform(0.4, 0.6) * fh
    frame = np.array([0.95, 0.95, 0.93] if rng.uniform() < 0.6 else [0.2, 0.2, 0.22], dtype=np.float32)
    glass_base = np.array([0.20, 0.27, 0.34], dtype=np.float32) * np.float32(rng.uniform(0.7, 1.2))
    for f in range(floors):
        ground = f == floors - 1
        for b in range(bays):
            x0 = b * bw
            y0 = f * fh
            if ground:
                if b == 1 % bays:
                    dw, dh = int(0.45 * bw), int(0.72 * fh)
                    xs, ys = x0 + (bw - dw) // 2, y0 + fh - dh
                    img[ys:ys + dh, xs:xs + dw] = np.array([0.35, 0.22, 0.14], dtype=np.float32) * np.float32(rng.uniform(0.6, 1.3))
                    img[ys:ys + 2, xs:xs + dw] = frame
                    continue
                ww, wh = int(0.8 * bw), int(0.6 * fh)
                yo = y0 + int(0.25 * fh)
            else:
                ww, wh = int(win_w), int(win_h)
                yo = y0 + int(0.3 * fh)
            xo = x0 + (bw - ww) // 2
            g = glass_base * np.float32(rng.uniform(0.8, 1.25))
            if rng.uniform() < 0.12:
                g = np.array([0.75, 0.68, 0.45], dtype=np.float32)  # lit / curtains
            gy = np.linspace(1.15, 0.85, wh, dtype=np.float32)[:, None, None]
            img[yo:yo + wh, xo:xo + ww] = g * gy
            img[yo - 2:yo, xo - 2:xo + ww + 2] = frame
            img[yo + wh:yo + wh + 3, xo - 3:xo + ww + 3] = frame * 0.9  # sill
            img[yo:yo + wh, xo - 2:xo] = frame
            img[yo:yo + wh, xo + ww:xo + ww + 2] = frame
            img[yo:yo + wh, xo + ww // 2 - 1:xo + ww // 2 + 1] = frame  # mullion
    # cornice line at the top
    img[0:4] *= 0.7
    return _to_u8(img)


def sky_clouds(rng: np.random.Generator, width: int = 512, height: int = 128) -> F32:
    """Cloud cover in [0, 1] on an equirectangular grid (columns = azimuth 0..2pi, rows = elevation
    from the zenith (row 0) to the horizon (last row)). Horizontally periodic."""
    n = fbm((height, width + width // 4), rng, base_cells=10, octaves=5)
    # make it periodic in azimuth by cross-fading the overlap
    ov = width // 4
    a = np.linspace(0.0, 1.0, ov, dtype=np.float32)[None, :]
    core = n[:, :width].copy()
    core[:, :ov] = core[:, :ov] * a + n[:, width:width + ov] * (1 - a)
    return np.clip((core - 0.05) * 2.2, 0.0, 1.0).astype(np.float32)
