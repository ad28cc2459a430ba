"""Exact ray casting of textured rectangles seen by a rectified stereo pair (pure numpy + OpenCV).

Why a second renderer next to :mod:`scene_perception.data.procedural`: that generator builds one scene per
sample in front of the camera, so every primitive lies beyond the near plane and its pixel window is the
bounding box of its projected corners.  A persistent world (:mod:`scene_perception.data.world`) is seen
from a moving camera: streets, facades and sidewalks reach *behind* the camera, so windows must come from
polygons clipped against the near plane, and the mip level must follow the current view (the same facade
is seen head-on and at grazing angles within a few frames).  The texture atlas layout, tile size and mip
bias are shared with ``procedural`` (imported, not copied) so both renderers have the same texture
statistics; ``procedural`` itself is left untouched because a training run depends on its exact output.

Conventions: quads are given in the *left optical frame* of the current pair (x right, y down, z forward,
metres); the left centre is the origin and the right centre is ``(B, 0, 0)``.  A ray through pixel
``(u, v)`` of a view is ``C + t * ((u - cx) / fx, (v - cy) / fy, 1)``, so the ray parameter ``t`` *is* the
depth.  A near clipping depth ``z_near`` bounds every disparity: ``d = fx * B / Z - doffs <= fx * B /
z_near - doffs``; hits nearer than it are ignored (the ray continues), in both views and in the
occlusion test, so the three stay mutually consistent.

View consistency (what makes the ground truth exact): a pixel's colour is a function of the 3-D point it
sees (plane coordinates, per-quad constants, and a mip level computed from the point's coordinates in the
*left* frame in both views), never of the view it is rendered in.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from scene_perception.data.procedural import _LOD_BIAS, _TILE, sample_atlas_trilinear
from scene_perception.geometry.stereo_camera import StereoCamera

__all__ = ["Quads", "ViewWindows", "cast_view", "nonoccluded_left", "texture_view", "view_windows"]

# Largest anisotropy factor (per axis) the mip selection accounts for.  Beyond 16x the surface is seen so
# edge-on that it covers few pixels; capping avoids log(inf) where a plane passes through the left centre.
_MAX_STRETCH = 16.0
# Quads whose pixel window is at most this many pixels are cast together over a flat pixel list.
_BATCH_AREA = 600


@dataclass
class Quads:
    """A struct of arrays of one-sided or two-sided textured rectangles.

    Quad ``i`` is ``origin + a * e1 + b * e2`` with ``a0 <= a <= a1``, ``b0 <= b <= b1`` (``bounds``), its
    normal is ``e1 x e2`` (``e1``, ``e2`` orthonormal).  ``cull`` marks one-sided faces (of closed boxes,
    or surfaces the camera can never get behind): seen from behind they are never the first hit, so they are
    skipped.  The appearance fields are view-independent: texture ``tile`` in the atlas, ``texel`` (metres
    per level-0 texel), ``tex_offset`` (texels), and an RGB ``tint`` that already includes the shading.
    ``label`` and ``instance`` are carried along for the caller (semantic class and instance id).

    Arrays rather than one object per quad: a street holds thousands of faces, and transforming and culling
    them per frame has to be a few vectorised operations.
    """

    origin: np.ndarray  # (N, 3) float64
    e1: np.ndarray  # (N, 3) float64
    e2: np.ndarray  # (N, 3) float64
    bounds: np.ndarray  # (N, 4) float64: a0, a1, b0, b1
    cull: np.ndarray  # (N,) bool
    tile: np.ndarray  # (N,) int32
    texel: np.ndarray  # (N,) float64
    tex_offset: np.ndarray  # (N, 2) float64
    tint: np.ndarray  # (N, 3) float32
    label: np.ndarray  # (N,) uint8
    instance: np.ndarray  # (N,) uint16

    def __len__(self) -> int:
        return int(self.origin.shape[0])

    @functools.cached_property
    def normal(self) -> np.ndarray:
        return np.cross(self.e1, self.e2)

    @functools.cached_property
    def offset(self) -> np.ndarray:
        """``normal . origin``: the plane of quad ``i`` is ``normal . X = offset``."""
        return np.einsum("ij,ij->i", self.normal, self.origin)

    def corners(self) -> np.ndarray:
        """(N, 4, 3) corners in cyclic order (needed by the polygon clipper)."""
        a0, a1, b0, b1 = (self.bounds[:, k:k + 1, None] for k in range(4))
        a = np.concatenate([a0, a1, a1, a0], axis=1)
        b = np.concatenate([b0, b0, b1, b1], axis=1)
        return self.origin[:, None, :] + a * self.e1[:, None, :] + b * self.e2[:, None, :]

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> Quads:
        """The quads in frame F, given ``world_T_F = [rotation | translation]``: ``X_F = R^T (X_w - t)``.

        Only geometry changes; texture coordinates are relative to each quad's own origin and axes, so a
        world point keeps its texel in every frame.
        """
        r = np.asarray(rotation, np.float64)
        t = np.asarray(translation, np.float64)
        return Quads(origin=(self.origin - t) @ r, e1=self.e1 @ r, e2=self.e2 @ r, bounds=self.bounds,
                     cull=self.cull, tile=self.tile, texel=self.texel, tex_offset=self.tex_offset,
                     tint=self.tint, label=self.label, instance=self.instance)


@dataclass
class ViewWindows:
    """Quads that may be seen in one view: indices, pixel windows and a lower bound of their depth.

    ``order`` is sorted by ``z_min`` (front to back) so the caster can skip a quad whose window is already
    entirely covered by nearer surfaces.
    """

    order: np.ndarray  # (K,) int64 quad indices
    windows: np.ndarray  # (K, 4) int64: u0, u1, v0, v1 (half-open)
    z_min: np.ndarray  # (K,) float64


def _project_bbox(points: np.ndarray, cam: StereoCamera, centre_x: float, cx: float
                  ) -> tuple[int, int, int, int]:
    """Pixel window of points in front of the camera, with the same margins as the vectorised path."""
    u = cam.fx * (points[:, 0] - centre_x) / points[:, 2] + cx
    v = cam.fy * points[:, 1] / points[:, 2] + cam.cy
    return (max(0, math.floor(float(u.min())) - 1), min(cam.width, math.ceil(float(u.max())) + 2),
            max(0, math.floor(float(v.min())) - 1), min(cam.height, math.ceil(float(v.max())) + 2))


def _clip_near(poly: np.ndarray, z_near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon (M, 3) against ``z >= z_near``."""
    out = []
    m = len(poly)
    for k in range(m):
        p, q = poly[k], poly[(k + 1) % m]
        p_in, q_in = p[2] >= z_near, q[2] >= z_near
        if p_in:
            out.append(p)
        if p_in != q_in:
            s = (z_near - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.array(out).reshape(-1, 3)


def view_windows(quads: Quads, cam: StereoCamera, centre_x: float, cx: float, z_near: float) -> ViewWindows:
    """Cull quads for one view (back faces, behind the near plane, outside the image) and find windows.

    Quads entirely beyond the near plane get the bounding box of their projected corners (vectorised);
    the few that straddle it (road, sidewalks, facades beside the camera) are clipped first, because
    projecting a corner behind the camera would flip it to the wrong side of the image.
    """
    centre = np.array([centre_x, 0.0, 0.0])
    n = quads.normal
    facing = ~quads.cull | (np.einsum("ij,ij->i", n, quads.origin - centre) < 0)
    corners = quads.corners()
    z = corners[..., 2]
    z_lo, z_hi = z.min(axis=1), z.max(axis=1)
    cand = facing & (z_hi >= z_near)
    ahead = cand & (z_lo >= z_near)
    w, h = cam.width, cam.height
    win = np.zeros((len(quads), 4), np.int64)
    zmin = np.maximum(z_lo, z_near)
    if ahead.any():
        c = corners[ahead]
        u = cam.fx * (c[..., 0] - centre_x) / c[..., 2] + cx
        v = cam.fy * c[..., 1] / c[..., 2] + cam.cy
        # Clamp before the int cast: far off-screen corners of nearly edge-on quads can be huge.
        win[ahead, 0] = np.floor(np.clip(u.min(axis=1), -2.0, w + 2.0)) - 1
        win[ahead, 1] = np.ceil(np.clip(u.max(axis=1), -2.0, w + 2.0)) + 2
        win[ahead, 2] = np.floor(np.clip(v.min(axis=1), -2.0, h + 2.0)) - 1
        win[ahead, 3] = np.ceil(np.clip(v.max(axis=1), -2.0, h + 2.0)) + 2
    for i in np.flatnonzero(cand & ~ahead):
        clipped = _clip_near(corners[i], z_near)
        if len(clipped) >= 3:
            clipped[:, 2] = np.maximum(clipped[:, 2], z_near)  # rounding in the clip may undercut z_near
            win[i] = _project_bbox(clipped, cam, centre_x, cx)
    np.clip(win[:, :2], 0, w, out=win[:, :2])
    np.clip(win[:, 2:], 0, h, out=win[:, 2:])
    keep = cand & (win[:, 0] < win[:, 1]) & (win[:, 2] < win[:, 3])
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(zmin[idx], kind="stable")]
    return ViewWindows(order=order, windows=win[order], z_min=zmin[order])


def _flatten_windows(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pixels of a list of windows as flat arrays: (window index, row, column)."""
    u0, u1, v0, v1 = (windows[:, k] for k in range(4))
    wid = np.maximum(u1 - u0, 0)
    area = wid * np.maximum(v1 - v0, 0)
    k = np.repeat(np.arange(len(windows)), area)
    local = np.arange(int(area.sum())) - np.repeat(np.cumsum(area) - area, area)
    wk = wid[k]
    return k, v0[k] + local // wk, u0[k] + local % wk


def cast_view(quads: Quads, cam: StereoCamera, centre_x: float, cx: float, z_near: float, vw: ViewWindows
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast one view: depth Z (inf where nothing is hit), quad index (-1), plane coordinates (a, b).

    Separable ray directions make each large quad a few broadcasts over its window.  Large quads come front
    to back, and one whose nearest possible depth is behind everything already in its window is skipped (in
    a street most facades and objects far down the road are hidden).  Small windows (distant objects, most
    of a street's quads) are cast together over a flat list of their pixels, because per-quad Python
    overhead would dominate; the nearest hit per pixel then goes through the same z-test, so the result
    does not depend on which path a quad took (up to exact depth ties).
    """
    h, w = cam.height, cam.width
    f32 = np.float32
    rx_all = ((np.arange(w, dtype=np.float64) - cx) / cam.fx).astype(f32)
    ry_all = ((np.arange(h, dtype=np.float64) - cam.cy) / cam.fy).astype(f32)
    zbuf = np.full((h, w), np.inf, f32)
    pid = np.full((h, w), -1, np.int32)
    coord_a = np.zeros((h, w), f32)
    coord_b = np.zeros((h, w), f32)
    centre = np.array([centre_x, 0.0, 0.0])
    normals, offsets = quads.normal, quads.offset
    zn = f32(z_near)
    win = vw.windows
    small = (win[:, 1] - win[:, 0]) * (win[:, 3] - win[:, 2]) <= _BATCH_AREA
    big = ~small
    for i, (u0, u1, v0, v1), z_min in zip(vw.order[big].tolist(), win[big].tolist(), vw.z_min[big].tolist(),
                                          strict=True):
        zwin = zbuf[v0:v1, u0:u1]
        if z_min >= float(zwin.max()):
            continue  # fully hidden behind nearer surfaces already drawn
        rx, ry = rx_all[u0:u1], ry_all[v0:v1]
        n = normals[i]
        num = f32(offsets[i] - n @ centre)
        denom = (f32(n[0]) * rx + f32(n[2]))[None, :] + (f32(n[1]) * ry)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / denom
        hit = (t >= zn) & (t < zwin)
        if not hit.any():
            continue
        e1, e2 = quads.e1[i], quads.e2[i]
        co = centre - quads.origin[i]
        a = t * ((f32(e1[0]) * rx + f32(e1[2]))[None, :] + (f32(e1[1]) * ry)[:, None]) + f32(co @ e1)
        b = t * ((f32(e2[0]) * rx + f32(e2[2]))[None, :] + (f32(e2[1]) * ry)[:, None]) + f32(co @ e2)
        a0, a1, b0, b1 = quads.bounds[i]
        hit &= (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
        zwin[hit] = t[hit]
        pid[v0:v1, u0:u1][hit] = i
        coord_a[v0:v1, u0:u1][hit] = a[hit]
        coord_b[v0:v1, u0:u1][hit] = b[hit]
    if small.any():
        k, vv, uu = _flatten_windows(win[small])
        q = vw.order[small][k]
        rx, ry = rx_all[uu], ry_all[vv]
        n = normals[q].astype(f32)
        num = (offsets - normals @ centre).astype(f32)[q]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / ((n[:, 0] * rx + n[:, 2]) + n[:, 1] * ry)
        hit = (t >= zn) & (t < zbuf[vv, uu])
        q, vv, uu, rx, ry, t = (x[hit] for x in (q, vv, uu, rx, ry, t))
        e1, e2 = quads.e1[q].astype(f32), quads.e2[q].astype(f32)
        co = centre - quads.origin[q]
        a = t * ((e1[:, 0] * rx + e1[:, 2]) + e1[:, 1] * ry) + (co * quads.e1[q]).sum(1).astype(f32)
        b = t * ((e2[:, 0] * rx + e2[:, 2]) + e2[:, 1] * ry) + (co * quads.e2[q]).sum(1).astype(f32)
        bd = quads.bounds[q]
        ok = (a >= bd[:, 0]) & (a <= bd[:, 1]) & (b >= bd[:, 2]) & (b <= bd[:, 3])
        q, vv, uu, t, a, b = (x[ok] for x in (q, vv, uu, t, a, b))
        # Nearest hit per pixel: sort by (pixel, depth) and keep each pixel's first entry.
        pix = vv * w + uu
        srt = np.lexsort((t, pix))
        first = srt[np.r_[True, pix[srt][1:] != pix[srt][:-1]]] if len(srt) else srt
        vv, uu = vv[first], uu[first]
        zbuf[vv, uu] = t[first]
        pid[vv, uu] = q[first]
        coord_a[vv, uu] = a[first]
        coord_b[vv, uu] = b[first]
    return zbuf, pid, coord_a, coord_b


def nonoccluded_left(quads: Quads, cam: StereoCamera, depth: np.ndarray, pid: np.ndarray, z_near: float,
                     right: ViewWindows, depth_right: np.ndarray | None = None) -> np.ndarray:
    """Left pixels whose 3-D point (or direction, for pixels at infinity) the right camera sees.

    Exact segment tests: for a finite point P the segment ``C_r + s (P - C_r)``, ``0 < s < 1`` may not
    cross another quad beyond the near plane; for a pixel at infinity the ray ``C_r + s r`` (``s > 0``,
    ``r`` its left ray direction) may not cross any quad.  The point must also project inside the right
    image and, on a one-sided quad, face the right camera.  Quads come from the right view's culling, so
    back faces (never first hit) are already gone.

    With ``depth_right`` (the right view's z-buffer) and an integer ``doffs``, pixels at infinity are
    decided by the right pixel ``u + doffs``, whose ray *is* ``C_r + s r``: the same test, already done
    by the right view's cast, and it keeps the sky out of the per-quad loop (anything can block the sky,
    so it would defeat the depth-based skipping).
    """
    h, w = depth.shape
    f32 = np.float32
    bl = cam.baseline
    fb = f32(cam.fx * bl)
    doffs = f32(cam.doffs)
    u = np.arange(w, dtype=f32)
    rx = ((u - f32(cam.cx)) / f32(cam.fx))[None, :]
    ry = ((np.arange(h, dtype=f32) - f32(cam.cy)) / f32(cam.fy))[:, None]
    finite = np.isfinite(depth)
    with np.errstate(divide="ignore"):
        disp = fb / depth - doffs  # -doffs at infinity
    ur = u[None, :] - disp
    visible = (ur >= 0) & (ur <= w - 1)
    centre = np.array([bl, 0.0, 0.0])
    # One-sided quads that face the left camera but not the right one (the plane passes between centres).
    facing_r = ~quads.cull | (np.einsum("ij,ij->i", quads.normal, quads.origin - centre) < 0)
    idx = np.maximum(pid, 0)
    visible &= ~finite | facing_r[idx]
    shift = float(cam.doffs)
    candidates = np.ones((h, w), bool)  # pixels the segment loop must examine
    if depth_right is not None and shift == round(shift):
        sky_v, sky_u = np.nonzero(~finite & visible)
        visible[sky_v, sky_u] = np.isinf(depth_right[sky_v, sky_u + int(round(shift))])
        candidates = finite
    zf = np.where(finite, depth, f32(1.0))
    dx = zf * rx - np.where(finite, f32(bl), f32(0.0))  # P - C_r, or the ray direction at infinity
    dy = zf * ry
    dz = zf
    s_max = np.where(finite, f32(1.0 - 1e-4), f32(np.inf))
    # Depth used to skip quads that lie behind every candidate point of their window (-1: not a candidate).
    depth_key = np.where(candidates, depth, f32(-1.0))
    d_frame = float(disp[finite].max()) if finite.any() else 0.0
    d_lo = min(0.0, -float(doffs))
    normals, offsets = quads.normal, quads.offset
    zn = f32(z_near)
    # Left-pixel windows: a blocker is nearer than P, so P's disparity is below the blocker's:
    # d <= fB / z_min - doffs; left u = right u + d.
    win = right.windows.copy()
    d_hi = np.minimum(d_frame, float(fb) / right.z_min - float(doffs))
    win[:, 0] = np.maximum(0, win[:, 0] + math.floor(d_lo) - 1)
    win[:, 1] = np.minimum(w, win[:, 1] + np.ceil(d_hi).astype(np.int64) + 1)
    keep = win[:, 0] < win[:, 1]
    order, win, z_mins = right.order[keep], win[keep], right.z_min[keep]
    small = (win[:, 1] - win[:, 0]) * (win[:, 3] - win[:, 2]) <= _BATCH_AREA
    big = ~small
    for i, (u0, u1, v0, v1), z_min in zip(order[big].tolist(), win[big].tolist(), z_mins[big].tolist(),
                                          strict=True):
        sl = (slice(v0, v1), slice(u0, u1))
        if z_min >= float(depth_key[sl].max()):
            continue  # every candidate point here is nearer than the quad: it cannot block any segment
        n = normals[i]
        ddx, ddy, ddz = dx[sl], dy[sl], dz[sl]
        denom = f32(n[0]) * ddx + f32(n[1]) * ddy + f32(n[2]) * ddz
        with np.errstate(divide="ignore", invalid="ignore"):
            s = f32(offsets[i] - n @ centre) / denom
        block = (s > 0) & (s < s_max[sl]) & (s * ddz >= zn) & (pid[sl] != i) & candidates[sl]
        if not block.any():
            continue
        e1, e2 = quads.e1[i], quads.e2[i]
        co = centre - quads.origin[i]
        a = s * (f32(e1[0]) * ddx + f32(e1[1]) * ddy + f32(e1[2]) * ddz) + f32(co @ e1)
        b = s * (f32(e2[0]) * ddx + f32(e2[1]) * ddy + f32(e2[2]) * ddz) + f32(co @ e2)
        a0, a1, b0, b1 = quads.bounds[i]
        block &= (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
        visible[sl] &= ~block
    if small.any():
        k, vv, uu = _flatten_windows(win[small])
        q = order[small][k]
        sel = (depth_key[vv, uu] > z_mins[small][k]) & (pid[vv, uu] != q) & visible[vv, uu]
        q, vv, uu = q[sel], vv[sel], uu[sel]
        ddx, ddy, ddz = dx[vv, uu], dy[vv, uu], dz[vv, uu]
        n = normals[q].astype(f32)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (offsets - normals @ centre).astype(f32)[q] / (n[:, 0] * ddx + n[:, 1] * ddy + n[:, 2] * ddz)
        ok = (s > 0) & (s < s_max[vv, uu]) & (s * ddz >= zn)
        q, vv, uu, s, ddx, ddy, ddz = (x[ok] for x in (q, vv, uu, s, ddx, ddy, ddz))
        e1, e2 = quads.e1[q].astype(f32), quads.e2[q].astype(f32)
        co = centre - quads.origin[q]
        a = s * (e1[:, 0] * ddx + e1[:, 1] * ddy + e1[:, 2] * ddz) + (co * quads.e1[q]).sum(1).astype(f32)
        b = s * (e2[:, 0] * ddx + e2[:, 1] * ddy + e2[:, 2] * ddz) + (co * quads.e2[q]).sum(1).astype(f32)
        bd = quads.bounds[q]
        block = (a >= bd[:, 0]) & (a <= bd[:, 1]) & (b >= bd[:, 2]) & (b <= bd[:, 3])
        visible[vv[block], uu[block]] = False
    return visible


def texture_view(quads: Quads, atlas: np.ndarray, x_offsets: np.ndarray, cam: StereoCamera, centre_x: float,
                 cx: float, depth: np.ndarray, pid: np.ndarray, coord_a: np.ndarray, coord_b: np.ndarray
                 ) -> np.ndarray:
    """Colour a view from the atlas (trilinear mip filtering); float32 RGB, 0 where nothing was hit.

    The mip level is the log2 of the pixel footprint on the surface in texels, measured for the *left*
    camera at the 3-D point (the right view converts its hits to the left frame first).  Footprint: the
    pixel's horizontal extent on the plane, ``|dX/du| = Z / fx * |e_x - X n_x / (n . X)|``, raised towards
    the geometric mean with the vertical one (roads seen at grazing angles would shimmer otherwise) but
    never below it (horizontal band-limiting is what makes the GT warp reproduce the left image).
    """
    f32 = np.float32
    h, w = depth.shape
    hit = pid >= 0
    idx = np.maximum(pid, 0)
    rx = ((np.arange(w, dtype=np.float64) - cx) / cam.fx).astype(f32)[None, :]
    ry = ((np.arange(h, dtype=np.float64) - cam.cy) / cam.fy).astype(f32)[:, None]
    z = np.where(hit, depth, f32(1.0))
    x = z * rx + f32(centre_x)
    y = z * ry
    # Plane offset seen from the left centre (quads are in the left frame): n . X = offset for X on it.
    off = quads.offset
    off = np.where(np.abs(off) < 1e-6, np.copysign(1e-6, off), off)
    kx = (quads.normal[:, 0] / off).astype(f32)[idx]
    ky = (quads.normal[:, 1] / off).astype(f32)[idx]
    r2 = x * x + y * y + z * z
    lim = f32(_MAX_STRETCH**2)
    gh = np.clip(f32(1.0) - f32(2.0) * x * kx + r2 * kx * kx, f32(0.25), lim)
    gv = np.clip(f32(1.0) - f32(2.0) * y * ky + r2 * ky * ky, f32(0.25), lim)
    fh = z / f32(cam.fx) * np.sqrt(gh)
    fv = z / f32(cam.fy) * np.sqrt(gv)
    foot = np.maximum(fh, np.sqrt(fh * fv))
    inv_texel = (1.0 / quads.texel).astype(f32)[idx]
    lod = np.log2(np.maximum(f32(_LOD_BIAS) * foot * inv_texel, f32(1.0)))
    ta = coord_a * inv_texel + quads.tex_offset[:, 0].astype(f32)[idx]
    tb = coord_b * inv_texel + quads.tex_offset[:, 1].astype(f32)[idx]
    tile_y = (quads.tile * (_TILE + 2)).astype(f32)[idx]
    out = sample_atlas_trilinear(atlas, x_offsets, ta, tb, lod, tile_y)
    out *= quads.tint[idx]
    out[~hit] = 0.0
    return out
