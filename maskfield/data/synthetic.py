"""Analytic ray casting of textured primitives: the renderer behind `maskfield synthesize`.

Shapes are boxes (yawed about world z), spheres, z-axis cylinders and one-sided planes. Every
shape carries the part id it belongs to and a solid (3D) procedural texture, so colours are
view-consistent by construction. Shading is Lambertian under two fixed directional lights plus
ambient: colour does not depend on the viewing direction, which keeps NeRF fitting easy.

Rays follow the convention of `maskfield.data.scene` (OpenCV c2w, integer pixel centres) and have
camera-frame z = 1, so the ray parameter t of a hit *is* its z-depth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("maskfield")

EPS = 1e-6
# Two fixed lights (key from above-front, weak fill from the other side) and ambient.
LIGHTS = (
    (np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82]), 0.5),
    (np.array([-0.6, 0.55, 0.58]) / np.linalg.norm([-0.6, 0.55, 0.58]), 0.25),
)
AMBIENT = 0.38


@dataclass
class Texture:
    """Smooth solid texture: a blend of colours `c0` and `c1` by a pattern of world position.

    kinds: "noise" (sum of random low-frequency sinusoids), "stripes" (sinusoidal bands along
    `direction`), "checker" (checkerboard on world axes `axes` with soft edges). `period` is in
    metres; keep it >= ~4 pixels at the typical viewing distance so supersampling removes aliasing.
    """

    kind: str
    c0: tuple[float, float, float]
    c1: tuple[float, float, float]
    period: float = 0.3
    direction: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    axes: tuple[int, int] = (0, 1)
    waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [k, 4] unit dir + phase

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """Colours [N, 3] in [0, 1] at world points p [N, 3]."""
        w = 2 * np.pi / self.period
        if self.kind == "stripes":
            t = 0.5 + 0.5 * np.sin(w * (p @ self.direction))
        elif self.kind == "checker":
            a, b = np.sin(w * p[:, self.axes[0]]), np.sin(w * p[:, self.axes[1]])
            t = 0.5 + 0.5 * np.tanh(3.0 * a * b)  # soft edges: no hard step to alias
        elif self.kind == "noise":
            s = np.sin(w * (p @ self.waves[:, :3].T) + self.waves[:, 3]).mean(axis=1)
            t = np.clip(0.5 + 0.9 * s, 0.0, 1.0)
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}")
        c0, c1 = np.asarray(self.c0), np.asarray(self.c1)
        return c0 + t[:, None] * (c1 - c0)


def make_texture(rng: np.random.Generator, kind: str, c0, c1, period: float, **kw) -> Texture:
    """A `Texture` whose random parts (noise waves, stripe direction) come from `rng`."""
    dirs = rng.normal(size=(3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    waves = np.concatenate([dirs, rng.uniform(0, 2 * np.pi, size=(3, 1))], axis=1)
    return Texture(kind, tuple(c0), tuple(c1), period, waves=waves, **kw)


@dataclass
class Box:
    """Box of half-extents `half` centred at `center`, rotated by `yaw` radians about world z."""

    center: np.ndarray
    half: np.ndarray
    yaw: float
    part: int
    texture: Texture

    def _rot(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Nearest hit t [N] (inf = miss) of rays o [3] + t d [N, 3] (slab method, local frame)."""
        R = self._rot()
        ol, dl = (o - self.center) @ R, d @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t1, t2 = (-self.half - ol) * inv, (self.half - ol) * inv
        tmin = np.minimum(t1, t2).max(axis=1)
        tmax = np.maximum(t1, t2).min(axis=1)
        return np.where((tmax >= tmin) & (tmin > EPS), tmin, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        R = self._rot()
        pl = (p - self.center) @ R
        axis = np.argmax(np.abs(pl) / self.half, axis=1)
        n = np.zeros_like(pl)
        n[np.arange(len(p)), axis] = np.sign(pl[np.arange(len(p)), axis])
        return n @ R.T

    def aabb(self) -> np.ndarray:
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * self.half
        pts = corners @ self._rot().T + self.center
        return np.stack([pts.min(0), pts.max(0)])


@dataclass
class Sphere:
    center: np.ndarray
    radius: float
    part: int
    texture: Texture

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.center
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * (d @ oc)
        c = oc @ oc - self.radius**2
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        return np.where((disc >= 0) & (t > EPS), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - self.center) / self.radius

    def aabb(self) -> np.ndarray:
        return np.stack([self.center - self.radius, self.center + self.radius])


@dataclass
class Cylinder:
    """Closed cylinder with a vertical axis: base centre `base`, `radius`, `height`."""

    base: np.ndarray
    radius: float
    height: float
    part: int
    texture: Texture

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ox, oy = o[0] - self.base[0], o[1] - self.base[1]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = 2.0 * (ox * d[:, 0] + oy * d[:, 1])
        c = ox * ox + oy * oy - self.radius**2
        disc = b * b - 4 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
            zs = o[2] + ts * d[:, 2] - self.base[2]
            side = np.where((disc >= 0) & (a > 1e-12) & (ts > EPS) & (zs >= 0) & (zs <= self.height), ts, np.inf)
            best = side
            for zc in (self.base[2], self.base[2] + self.height):
                tc = (zc - o[2]) / d[:, 2]
                x, y = ox + tc * d[:, 0], oy + tc * d[:, 1]
                cap = np.where((tc > EPS) & (x * x + y * y <= self.radius**2), tc, np.inf)
                best = np.minimum(best, cap)
        return best

    def normal(self, p: np.ndarray) -> np.ndarray:
        rel = p - self.base
        n = np.zeros_like(p)
        top, bottom = np.abs(rel[:, 2] - self.height) < 1e-5, np.abs(rel[:, 2]) < 1e-5
        n[:, :2] = rel[:, :2] / self.radius
        n[top] = (0.0, 0.0, 1.0)
        n[bottom] = (0.0, 0.0, -1.0)
        return n

    def aabb(self) -> np.ndarray:
        r = np.array([self.radius, self.radius, 0.0])
        return np.stack([self.base - r, self.base + r + np.array([0, 0, self.height])])


@dataclass
class Plane:
    """One-sided infinite plane through `point`, visible from the side `normal` points to.

    Walls of a convex room are planes facing inward: from inside, the nearest plane hit is
    exactly where the ray leaves the room.
    """

    point: np.ndarray
    normal_vec: np.ndarray
    part: int
    texture: Texture

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        denom = d @ self.normal_vec
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.point - o) @ self.normal_vec) / denom
        return np.where((denom < -1e-12) & (t > EPS), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.normal_vec, p.shape)

    def aabb(self) -> None:
        return None


Shape = Box | Sphere | Cylinder | Plane


@dataclass
class Rendered:
    """Renders of V views: colours and exact ground truth from the centre ray of each pixel."""

    rgb: np.ndarray  # [V, H, W, 3] uint8 (supersampled)
    depth: np.ndarray  # [V, H, W] float32 z-depth, 0 = no hit
    part: np.ndarray  # [V, H, W] int32 part id, 0 = no hit


def _screen_box(shape: Shape, K: np.ndarray, c2w: np.ndarray, W: int, H: int) -> tuple[slice, slice] | None:
    """Pixel rows/cols that can see `shape` (from its projected world box), None if off screen.

    A cheap culling step: most objects cover a small part of the frame, so testing only the rays
    in their screen rectangle is what makes the caster fast.
    """
    box = shape.aabb()
    full = (slice(0, H), slice(0, W))
    if box is None:
        return full
    corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    p = (corners - c2w[:3, 3]) @ c2w[:3, :3]
    if np.all(p[:, 2] <= EPS):
        return None
    if np.any(p[:, 2] <= 1e-3):
        return full  # straddles the camera plane: keep it simple and test every ray
    u = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
    v = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
    c0, c1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, W)
    r0, r1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, H)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def cast(shapes: list[Shape], K: np.ndarray, c2w: np.ndarray, W: int, H: int, offset=(0.0, 0.0)):
    """Cast one ray per pixel, shifted by `offset` (du, dv) pixels from the pixel centre.

    Returns:
        t [H, W] float64 (inf = miss), index [H, W] int64 of the shape hit (-1 = miss),
        and the ray directions [H, W, 3] (camera z = 1).
    """
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    d_cam = np.stack([(u + offset[0] - K[0, 2]) / K[0, 0], (v + offset[1] - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    t_best = np.full((H, W), np.inf)
    idx = np.full((H, W), -1, dtype=np.int64)
    for k, shape in enumerate(shapes):
        win = _screen_box(shape, K, c2w, W, H)
        if win is None:
            continue
        dw = d[win]
        t = shape.intersect(o, dw.reshape(-1, 3)).reshape(dw.shape[:2])
        closer = t < t_best[win]
        t_best[win] = np.where(closer, t, t_best[win])
        idx[win] = np.where(closer, k, idx[win])
    return t_best, idx, d


def shade(shapes: list[Shape], o: np.ndarray, t: np.ndarray, idx: np.ndarray, d: np.ndarray, background) -> np.ndarray:
    """Lambertian colours [H, W, 3] float of the hits of `cast` (misses get `background`)."""
    out = np.empty(t.shape + (3,))
    out[:] = background
    for k in np.unique(idx[idx >= 0]):
        m = idx == k
        p = o + t[m][:, None] * d[m]
        n = shapes[k].normal(p)
        light = AMBIENT + sum(w * np.clip(n @ L, 0.0, None) for L, w in LIGHTS)
        out[m] = shapes[k].texture.albedo(p) * light[:, None]
    return np.clip(out, 0.0, 1.0)


def render_view(shapes: list[Shape], K: np.ndarray, c2w: np.ndarray, W: int, H: int, supersample: int,
                background=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view: rgb [H, W, 3] uint8 (mean of s x s sub-pixel rays), depth [H, W] float32 and
    part id [H, W] int32 from the pixel-centre ray (so labels never blend across edges)."""
    t, idx, _ = cast(shapes, K, c2w, W, H)
    depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
    part_of = np.array([s.part for s in shapes] + [0], dtype=np.int32)
    part = part_of[idx]  # idx -1 picks the trailing 0
    s = max(int(supersample), 1)
    acc = np.zeros((H, W, 3))
    for i in range(s):
        for j in range(s):
            off = ((j + 0.5) / s - 0.5, (i + 0.5) / s - 0.5)
            ts, ids, ds = cast(shapes, K, c2w, W, H, off)
            acc += shade(shapes, c2w[:3, 3], ts, ids, ds, background)
    rgb = np.round(acc / (s * s) * 255.0).astype(np.uint8)
    return rgb, depth, part


def render_views(shapes: list[Shape], K: np.ndarray, c2w: np.ndarray, W: int, H: int, supersample: int = 2) -> Rendered:
    """Render V views (K [V, 3, 3], c2w [V, 4, 4]) into a `Rendered`."""
    V = len(c2w)
    rgb = np.empty((V, H, W, 3), np.uint8)
    depth = np.empty((V, H, W), np.float32)
    part = np.empty((V, H, W), np.int32)
    for v in range(V):
        rgb[v], depth[v], part[v] = render_view(shapes, K[v], c2w[v], W, H, supersample)
    return Rendered(rgb, depth, part)


def render_labels(shapes: list[Shape], K: np.ndarray, c2w: np.ndarray, W: int, H: int) -> np.ndarray:
    """Part ids [H, W] int32 of one view from centre rays only (cheap visibility checks)."""
    _, idx, _ = cast(shapes, K, c2w, W, H)
    return np.array([s.part for s in shapes] + [0], dtype=np.int32)[idx]


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world [4, 4] at `eye` looking at `target`, image up ~ world `up`."""
    eye, target, up = (np.asarray(x, dtype=np.float64) for x in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # points "down" in the image
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w
