"""The car-following neighbour search (:func:`sim.paths.path_neighbours`): compiled kernels over a
per-world spatial grid of the actors, so that a query tests the actors near its path, not all.

A query is a point at arc length ``sq`` on path ``q``; its *window* is ``window + 1`` path vertices
``stride`` apart ahead of it (behind it, with ``backward``). An actor is placed at the nearest
window vertex (compared in float32), projected on that vertex's tangent, and counts when it lies
ahead (behind) of the query and its box reaches the query's corridor. The leader is the actor with
the smallest gap, ties to the lower slot. This definition is the oracle; the search below returns
exactly its answer, bit for bit, while testing only a few actors:

* **Where a counted actor can be.** An actor placed at window vertex ``j`` lies in the corridor
  strip of ``j``'s tangent (half width ``L``: the corridor plus the largest box) and, being nearer
  to ``j`` than to ``j``'s neighbours in the window, between the bisectors with them. For every
  vertex but the window's far end that is a bounded rectangle in ``j``'s frame; their union's
  axis-aligned box is the query's *box*. The far-end vertex has no neighbour beyond it: its region
  is a *ray*, the half-strip along its tangent, unbounded (a leader far ahead on a straight road
  still counts). A path that turns by more than ~78 degrees between two window vertices has no
  bounded bisector strip; such a query tests every actor (the same answer, the old cost).
* **Which actors are looked at.** A scenario with at least :data:`GRID_MIN_ACTORS` actor slots
  bins each world's actors once per step in a uniform grid (:func:`grid_build_nb`: a counting
  sort; cell size :data:`CELL_M`, grown so there are at most ``max(256, 4 N)`` cells). A query
  (:func:`neighbour_grid_nb`) takes the actors of the cells of its box, then marches the ray's
  cells outwards, one cell-long stretch at a time (:func:`collect_nb`), and stops once everything
  further is farther than the best gap found, or the strip has left the grid. An actor outside the
  box is kept only if the far vertex's own arithmetic (ahead, in the corridor, not beyond the best
  gap) keeps it. Below that many slots the grid code is not compiled in at all (``gi`` typed
  None): at 20 actors a grid costs more than it saves.
* **The exact test is one implementation**, :func:`neighbour_one_nb` without a grid: every
  allowed actor in slot order. The grid search runs it on each stretch's candidates, copied in
  slot order, and keeps the best of the stretches (ties to the lower slot). Nothing a cheap test
  drops can pass the exact test: for the ray the cheap test is the exact test's own arithmetic
  for the far vertex; the box's bisector bounds carry a 0.5 m slack, far above float32 rounding.

Per query this is O(cells visited + candidates) instead of O(N) exact tests: the cost follows the
traffic near the path, not the number of actors in the world (``loopdrive bench neighbours``).
Units: m, m/s, rad.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

__all__ = ["CELL_M", "GRID_MIN_ACTORS", "collect_nb", "grid_alloc_nb", "grid_build_nb", "neighbour_grid_nb", "neighbour_one_nb", "path_neighbours_nb", "path_reach_nb"]

#: m, the nominal grid cell (grown when a world's actors spread wider than the cell budget)
CELL_M = 8.0
#: a scenario with fewer actor slots than this has no grid compiled in; with one, a world with
#: fewer actors present than this in a step is searched without it
GRID_MIN_ACTORS = 48
#: m, slack on the bisector bounds and the box (float32 nearest-vertex rounding is ~1e-3 m)
_SLACK = 0.5
#: cos of the largest turn between two window vertices that still bounds a vertex's region
_MIN_COS = 0.2


def _jit(fn: Any, **kw: Any) -> Any:
    return numba.njit(cache=True, nogil=True, **kw)(fn)


def _grid_alloc(n_actors, min_actors):  # type: ignore[no-untyped-def]
    """One world's grid scratch for ``n_actors`` slots, or ``gi = None`` (no grid, compiled out)
    when ``min_actors`` is None; otherwise a world with fewer than ``min_actors`` actors present
    is searched without its grid. ``gf``: x0, y0, cell, 1/cell (m), the largest length + width (m),
    then 7 N floats of the candidates' columns. ``gi``: nx, ny, the query stamp, the cell budget C,
    ``min_actors``, the cell starts (C + 1), the actors in cell order (N), each actor's last query
    stamp (N), a query's candidates (N) and their ``allow`` flags (N)."""
    gf = np.zeros(5 + 7 * n_actors)
    if min_actors is None:
        return gf, None
    cap = max(256, 4 * n_actors)
    gi = np.zeros(6 + cap + 4 * n_actors, dtype=np.int64)
    gi[3] = cap
    gi[4] = min_actors
    return gf, gi


grid_alloc_nb = _jit(_grid_alloc)


def _layout(cap, N):  # type: ignore[no-untyped-def]
    """Offsets into ``gi`` (:func:`grid_alloc_nb`) for cell budget ``cap`` and N slots: the cell
    starts, the actors in cell order, the query stamps and the candidates (their ``allow`` flags
    follow, N further)."""
    oi = 6 + cap
    return 5, oi, oi + N, oi + 2 * N


_layout_nb = _jit(_layout, inline="always")


def _window_vertex(k0, w, window, stride, backward, P):  # type: ignore[no-untyped-def]
    """Path vertex of window position ``w`` for a query at vertex ``k0`` (clipped to the path's
    ``P`` vertices)."""
    return min(max(k0 + (w - window if backward else w) * stride, 0), P - 1)


_window_vertex_nb = _jit(_window_vertex, inline="always")


def _cell_of(x, y, x0, y0, inv_c, nx, ny):  # type: ignore[no-untyped-def]
    """The grid cell (flat index, x-major) of point (x, y), m."""
    return min(np.int64((x - x0) * inv_c), nx - 1) * ny + min(np.int64((y - y0) * inv_c), ny - 1)


_cell = _jit(_cell_of, inline="always")


def _grid_build(px, py, plen, pwid, incl, gf, gi):  # type: ignore[no-untyped-def]
    """Bin the actors ``incl`` (N,) with finite positions ``px``, ``py`` (m) into the world's grid
    (:func:`grid_alloc_nb`; nothing when ``gi`` is None). Fewer than ``gi[4]`` of them: no grid
    this step (``gi[0] = 0``). An actor left out (position not finite) can never be counted."""
    if gi is None:
        return
    N = px.shape[0]
    x0 = np.inf
    y0 = np.inf
    x1 = -np.inf
    y1 = -np.inf
    cw = 0.0
    count = 0
    for n in range(N):
        if incl[n] and math.isfinite(px[n]) and math.isfinite(py[n]):
            x0 = min(x0, px[n])
            y0 = min(y0, py[n])
            x1 = max(x1, px[n])
            y1 = max(y1, py[n])
            cw = max(cw, plen[n] + pwid[n])
            count += 1
    gf[4] = cw
    gi[0] = 0
    gi[1] = 0
    if count < gi[4] or count == 0 or not (math.isfinite(x1 - x0) and math.isfinite(y1 - y0)):
        return
    cap = gi[3]
    c = CELL_M
    while True:
        nx = np.int64((x1 - x0) / c) + 1
        ny = np.int64((y1 - y0) / c) + 1
        if nx * ny <= cap:
            break
        c *= 1.5
    gf[0] = x0
    gf[1] = y0
    gf[2] = c
    gf[3] = 1.0 / c
    gi[0] = nx
    gi[1] = ny
    nc = nx * ny
    oc, oi, os_, _ = _layout_nb(cap, N)
    for i in range(nc + 1):
        gi[oc + i] = 0
    # counting sort: counts, inclusive prefix sums (cell ends), then each actor placed from its
    # cell's end backwards, which leaves each cell's start in place (slots ascending within it)
    for n in range(N):
        gi[os_ + n] = -1
        if incl[n] and math.isfinite(px[n]) and math.isfinite(py[n]):
            gi[oc + _cell(px[n], py[n], x0, y0, gf[3], nx, ny)] += 1
    for i in range(1, nc):
        gi[oc + i] += gi[oc + i - 1]
    gi[oc + nc] = count
    for n in range(N - 1, -1, -1):
        if incl[n] and math.isfinite(px[n]) and math.isfinite(py[n]):
            i = _cell(px[n], py[n], x0, y0, gf[3], nx, ny)
            gi[oc + i] -= 1
            gi[oi + gi[oc + i]] = n
    gi[2] = 0


grid_build_nb = _jit(_grid_build)


def _collect(px, py, plen, pwid, allow, backward, ds, sq, kf, chf, shf, xf, yf, hoff, base, L, M, bx0, by0, bx1, by1, gf, gi, seg, best, best_n):  # type: ignore[no-untyped-def]
    """The next candidates of a grid query, written to the candidates of ``gi``: with ``seg`` 0 the
    actors of the cells meeting the box [bx0, bx1] x [by0, by1] (m); from ``seg`` 1 on, the cells of
    the far-end vertex ``kf``'s ray (at (xf, yf), tangent (chf, shf), half width ``L``, from ``-M``
    along it), one cell-long stretch after another until one holds a candidate. A candidate is not
    seen yet by the query, allowed, and not rejected by the cheap tests: in the box, or on the ray
    ahead of the query, in the corridor and not beyond the best gap ``best`` (slot ``best_n``).
    Returns (their count, the next ``seg``; -1 when the ray has left the grid or everything
    further is farther than ``best``)."""
    N = px.shape[0]
    oc, oi, os_, oq = _layout_nb(gi[3], N)  # offsets, not views: nothing here is reference counted
    if seg == 0:
        gi[2] += 1
    qid = gi[2]
    c = gf[2]
    ic = gf[3]
    nx = gi[0]
    ny = gi[1]
    sig = -1.0 if backward else 1.0
    dxr = sig * chf
    dyr = sig * shf
    ex = L * abs(dyr)
    ey = L * abs(dxr)
    count = 0
    while True:
        if seg == 0:
            xa, ya, xb, yb = bx0, by0, bx1, by1
        else:
            # the ray, a cell's length at a time from inside the box, while anything further could
            # still beat the best gap and the strip is still over the grid
            tau = -M + (seg - 1) * c
            if sig * (kf * ds - sq) + tau - 0.5 * gf[4] - _SLACK > best:
                return count, -1
            for a in range(2):
                d = dxr if a == 0 else dyr
                p0 = xf if a == 0 else yf
                lo = (gf[0] if a == 0 else gf[1]) - L - c
                hi = lo + (gi[0] if a == 0 else gi[1]) * c + 2.0 * (L + c)
                end = p0 + tau * d
                if (d >= 0.0 and end > hi) or (d <= 0.0 and end < lo):
                    return count, -1
            x0 = xf + tau * dxr
            x1 = xf + (tau + c) * dxr
            y0 = yf + tau * dyr
            y1 = yf + (tau + c) * dyr
            xa, ya, xb, yb = min(x0, x1) - ex, min(y0, y1) - ey, max(x0, x1) + ex, max(y0, y1) + ey
        ia = max(math.floor((xa - gf[0]) * ic), 0)
        ib = min(math.floor((xb - gf[0]) * ic), nx - 1)
        ja = max(math.floor((ya - gf[1]) * ic), 0)
        jb = min(math.floor((yb - gf[1]) * ic), ny - 1)
        for i in range(ia, ib + 1):
            for j in range(ja, jb + 1):
                cc = i * ny + j
                for it in range(gi[oc + cc], gi[oc + cc + 1]):
                    n = gi[oi + it]
                    if gi[os_ + n] == qid:
                        continue
                    gi[os_ + n] = qid
                    if not allow[n]:
                        continue
                    if not (bx0 <= px[n] <= bx1 and by0 <= py[n] <= by1):
                        # outside the box only the far vertex can place it: its exact arithmetic
                        rx = px[n] - xf
                        ry = py[n] - yf
                        s_proj = kf * ds + chf * rx + shf * ry
                        ahead = sq - s_proj if backward else s_proj - sq
                        if not ahead > 0.0:
                            continue
                        if not (abs(chf * ry - shf * rx - hoff) < 0.5 * (base + plen[n] + pwid[n]) + 0.3):
                            continue
                        lb = ahead - 0.5 * (plen[n] + pwid[n])
                        if lb > best or (lb == best and n > best_n):
                            continue
                    gi[oq + count] = n
                    count += 1
        seg += 1
        if count > 0:
            return count, seg


collect_nb = _jit(_collect)


def _path_reach(xy, heading, ds, stride):  # type: ignore[no-untyped-def]
    """Per path (Q, 2): ``(a, b)`` such that every point an actor can be counted at through a window
    vertex other than the far end lies within ``a + b * L`` metres of that vertex, for a corridor
    half width ``L`` (m), with window vertices ``stride`` apart. From the bisectors with the window
    neighbours: a point within ``L`` of vertex k's tangent line and nearer to k than to a neighbour
    at chord (td, nd) in k's frame has ``|t| <= dd / (2 |td|) + L |nd| / |td|``, so it is within
    ``|t| + L`` of k. ``a = inf`` for a path whose chord turns more than ~78 degrees from the
    tangent somewhere (such a region is unbounded: its queries test every actor)."""
    Q, P = heading.shape
    out = np.zeros((Q, 2))
    for q in range(Q):
        a = 0.0
        b = 0.0
        for k in range(P):
            ch = math.cos(heading[q, k])
            sh = math.sin(heading[q, k])
            for side in range(2):
                kn = min(k + stride, P - 1) if side == 0 else max(k - stride, 0)
                if kn == k:
                    continue
                dx = xy[q, kn, 0] - xy[q, k, 0]
                dy = xy[q, kn, 1] - xy[q, k, 1]
                td = ch * dx + sh * dy
                nd = ch * dy - sh * dx
                dd = dx * dx + dy * dy
                # the successor must lie ahead along the tangent, the predecessor behind
                if (td if side == 0 else -td) <= _MIN_COS * math.sqrt(dd):
                    a = np.inf
                    continue
                a = max(a, 0.5 * dd / abs(td))
                b = max(b, abs(nd) / abs(td))
        out[q, 0] = a + ds + _SLACK
        out[q, 1] = b + 1.0
    return out


path_reach_nb = _jit(_path_reach)


def _neighbour_one(xy, heading, cos_h, sin_h, ds, q, sq, wq, off, px, py, fx, fy, pyaw, pv, plen, pwid, allow, window, stride, backward, idx, wx, wy, reach, gf, gi):  # type: ignore[no-untyped-def]
    """One query: the nearest allowed actor ahead of (behind, with ``backward``) arc length ``sq``
    on path ``q`` (width ``wq``, own lateral offset ``off``). The actors are the columns
    ``px .. pwid`` (N,) (``fx``, ``fy``: ``px``, ``py`` as float32) and ``allow`` (N,); ``cos_h`` /
    ``sin_h`` (Q, P) the cosine and sine of ``heading`` (empty: computed here). ``idx``, ``wx``,
    ``wy`` are scratch (window + 1,); ``reach`` (Q, 2) :func:`path_reach_nb` for ``stride``;
    ``gf``, ``gi`` the world's grid (:func:`grid_alloc_nb`, :func:`grid_build_nb`, over a
    superset of ``allow``), or ``gi = None``: no grid. Returns gap (m, ``inf`` = none), speed along
    the path (m/s), slot (-1 = none).

    Without a grid (a compile-time choice: ``gi`` typed None, so the grid code is not even in the
    compiled function) this is the exact test of every allowed actor in slot order; with one,
    :func:`neighbour_grid_nb` runs this same function on the candidates it selects. The exact
    test's cheap checks run first and are exact: ``cl * |sin| + cw * |cos| <= cl + cw`` and
    rounding is monotonic (and the sums keep their order), so an actor rejected by the bounds with
    ``cl + cw`` fails the full test too."""
    if gi is not None:
        return neighbour_grid_nb(xy, heading, cos_h, sin_h, ds, q, sq, wq, off, px, py, fx, fy, pyaw, pv, plen, pwid, allow, window, stride, backward, idx, wx, wy, reach, gf, gi)
    N = px.shape[0]
    P = xy.shape[1]
    W = window + 1
    tab = cos_h.shape[0] > 0
    k0 = np.int64(sq / ds)
    for w in range(W):
        k = _window_vertex_nb(k0, w, window, stride, backward, P)
        idx[w] = k
        wx[w] = np.float32(xy[q, k, 0])
        wy[w] = np.float32(xy[q, k, 1])
    best = np.inf
    best_n = -1
    best_v = 0.0
    hoff = 0.5 * off
    base = wq + abs(off)
    for n in range(N):
        if not allow[n]:
            continue
        fxn = fx[n]
        fyn = fy[n]
        jm = 0
        dm = np.float32(np.inf)
        for w in range(W):
            ex = fxn - wx[w]
            ey = fyn - wy[w]
            e = ex * ex + ey * ey
            if e < dm:
                dm = e
                jm = w
        gx = px[n]
        gy = py[n]
        kv = idx[jm]
        h = heading[q, kv]
        if tab:
            ch = cos_h[q, kv]
            sh = sin_h[q, kv]
        else:
            ch = math.cos(h)
            sh = math.sin(h)
        rx = gx - xy[q, kv, 0]
        ry = gy - xy[q, kv, 1]
        s_proj = kv * ds + ch * rx + sh * ry
        if backward:
            if not s_proj < sq:
                continue
            ahead = sq - s_proj
        else:
            if not s_proj > sq:
                continue
            ahead = s_proj - sq
        lat = ch * ry - sh * rx
        cl = plen[n]
        cw = pwid[n]
        if not (abs(lat - hoff) < 0.5 * (base + cl + cw) + 0.3):
            continue
        if ahead - 0.5 * (cl + cw) >= best:
            continue
        rel = pyaw[n] - h
        crel = math.cos(rel)
        cr = abs(crel)
        sr = abs(math.sin(rel))
        gap = ahead - 0.5 * (cl * cr + cw * sr)
        if not (abs(lat - hoff) < 0.5 * (base + cl * sr + cw * cr) + 0.3):
            continue
        if gap < best:
            best = gap
            best_n = n
            best_v = pv[n] * crel
    return best, best_v, best_n


neighbour_one_nb = _jit(_neighbour_one, inline="always")


def _neighbour_grid(xy, heading, cos_h, sin_h, ds, q, sq, wq, off, px, py, fx, fy, pyaw, pv, plen, pwid, allow, window, stride, backward, idx, wx, wy, reach, gf, gi):  # type: ignore[no-untyped-def]
    """:func:`neighbour_one_nb` over the world's grid: segment by segment (the box, then the ray's
    stretches; :func:`collect_nb`), the candidates in slot order are copied into ``gf`` / ``gi``
    and searched by the grid-less :func:`neighbour_one_nb` itself; the best of the segments wins,
    ties to the lower slot, which is the grid-less answer over all actors."""
    if gi is None:  # never called so (the caller's branch is compiled out): typing only
        return np.inf, 0.0, np.int64(-1)
    N = px.shape[0]
    if gi[0] == 0 or not math.isfinite(reach[q, 0] + reach[q, 1]):  # no grid this step, or a sharp path
        return neighbour_one_nb(xy, heading, cos_h, sin_h, ds, q, sq, wq, off, px, py, fx, fy, pyaw, pv, plen, pwid, allow, window, stride, backward, idx, wx, wy, reach, gf, None)
    P = xy.shape[1]
    W = window + 1
    k0 = np.int64(sq / ds)
    for w in range(W):
        idx[w] = _window_vertex_nb(k0, w, window, stride, backward, P)
    _, _, _, oq = _layout_nb(gi[3], N)
    cols = gf[5 : 5 + 6 * N]
    c32 = gf[5 + 6 * N : 5 + 7 * N].view(np.float32)
    ca = gi[oq + N : oq + 2 * N].view(np.bool_)
    # the query's box: the window's vertices grown by the reach of their regions (the far end's too)
    hoff = 0.5 * off
    base = wq + abs(off)
    L = abs(hoff) + 0.5 * (base + gf[4]) + 0.3 + _SLACK
    M = reach[q, 0] + reach[q, 1] * L
    bx0 = np.inf
    by0 = np.inf
    bx1 = -np.inf
    by1 = -np.inf
    for w in range(W):
        bx0 = min(bx0, xy[q, idx[w], 0] - M)
        bx1 = max(bx1, xy[q, idx[w], 0] + M)
        by0 = min(by0, xy[q, idx[w], 1] - M)
        by1 = max(by1, xy[q, idx[w], 1] + M)
    # the far-end vertex (its first copy when the window is clipped at the path's end): its ray
    wf = 0
    if not backward:
        wf = W - 1
        while wf > 0 and idx[wf - 1] == idx[wf]:
            wf -= 1
    kf = idx[wf]
    if cos_h.shape[0] > 0:
        chf = cos_h[q, kf]
        shf = sin_h[q, kf]
    else:
        chf = math.cos(heading[q, kf])
        shf = math.sin(heading[q, kf])
    best = np.inf
    best_n = -1
    best_v = 0.0
    seg = 0
    while seg >= 0:
        count, seg = collect_nb(px, py, plen, pwid, allow, backward, ds, sq, kf, chf, shf, xy[q, kf, 0], xy[q, kf, 1], hoff, base, L, M, bx0, by0, bx1, by1, gf, gi, seg, best, best_n)
        if count == 0:
            continue
        for i in range(1, count):  # insertion sort: slot order, so ties keep going to the lower slot
            v = gi[oq + i]
            j = i - 1
            while j >= 0 and gi[oq + j] > v:
                gi[oq + j + 1] = gi[oq + j]
                j -= 1
            gi[oq + j + 1] = v
        for i in range(count):
            n = gi[oq + i]
            cols[i] = px[n]
            cols[N + i] = py[n]
            cols[2 * N + i] = pyaw[n]
            cols[3 * N + i] = pv[n]
            cols[4 * N + i] = plen[n]
            cols[5 * N + i] = pwid[n]
            c32[i] = fx[n]
            c32[N + i] = fy[n]
            ca[i] = True
        g, v, m = neighbour_one_nb(
            xy, heading, cos_h, sin_h, ds, q, sq, wq, off, cols[:count], cols[N : N + count], c32[:count], c32[N : N + count],
            cols[2 * N : 2 * N + count], cols[3 * N : 3 * N + count], cols[4 * N : 4 * N + count], cols[5 * N : 5 * N + count], ca[:count],
            window, stride, backward, idx, wx, wy, reach, gf, None,
        )  # fmt: skip
        if m >= 0:
            n = gi[oq + m]
            if g < best or (g == best and n < best_n):
                best = g
                best_n = n
                best_v = v
    return best, best_v, best_n


neighbour_grid_nb = _jit(_neighbour_grid)


def _path_neighbours(xy, heading, ds, path_id, s, width_q, props, allowed, window, stride, backward, offset, grid_min, reach):  # type: ignore[no-untyped-def]
    """Kernel of :func:`sim.paths.path_neighbours` (arrays (B, M), props (B, N, 6),
    allowed (B, M, N), width_q and offset broadcast to (B, M)); ``grid_min`` None (no grid) or the
    fewest actors present in a world for its grid; ``reach`` :func:`path_reach_nb` of the paths
    for ``stride`` (None: computed here). Returns gap (m), speed (m/s), slot."""
    B, M = s.shape
    N = props.shape[1]
    W = window + 1
    g_out = np.full((B, M), np.inf)
    v_out = np.zeros((B, M))
    w_out = np.full((B, M), -1, dtype=np.int64)
    idx = np.empty(W, dtype=np.int64)
    wx = np.empty(W, dtype=np.float32)
    wy = np.empty(W, dtype=np.float32)
    if reach is None:  # noqa: SIM108 - a statement, so numba compiles out the branch by the argument type
        rc = path_reach_nb(xy, heading, ds, stride)
    else:
        rc = reach
    gf, gi = grid_alloc_nb(N, grid_min)
    incl = np.empty(N, dtype=np.bool_)
    no_tab = np.zeros((0, 0))
    for b in range(B):
        pb = props[b]
        fx = pb[:, 0].astype(np.float32)
        fy = pb[:, 1].astype(np.float32)
        for n in range(N):
            incl[n] = False
            for m in range(M):
                incl[n] = incl[n] or allowed[b, m, n]
        grid_build_nb(pb[:, 0], pb[:, 1], pb[:, 4], pb[:, 5], incl, gf, gi)
        for m in range(M):
            wq = width_q[b if width_q.shape[0] > 1 else 0, m if width_q.shape[1] > 1 else 0]
            off = offset[b if offset.shape[0] > 1 else 0, m if offset.shape[1] > 1 else 0]
            g, v, n = neighbour_one_nb(
                xy, heading, no_tab, no_tab, ds, path_id[b, m], s[b, m], wq, off, pb[:, 0], pb[:, 1], fx, fy, pb[:, 2], pb[:, 3], pb[:, 4], pb[:, 5],
                allowed[b, m], window, stride, backward, idx, wx, wy, rc, gf, gi,
            )  # fmt: skip
            if n >= 0:
                g_out[b, m] = g
                v_out[b, m] = v
                w_out[b, m] = n
    return g_out, v_out, w_out


path_neighbours_nb = _jit(_path_neighbours)
