"""Procedural scene content for `maskfield synthesize`: objects with parts, rooms, camera paths.

Three scenes, one per on-disk layout, all world z-up, metres:
- "room" (replica): cameras inside a furnished room, hfov 90;
- "forward" (ovs3d): a cluttered table against a wall, cameras on a small plane facing it;
- "orbit" (lerf_mask): 360 degrees around a table of coloured objects named by attribute phrases.
Everything random (placement jitter, colours of the furniture, texture phases) comes from one
`np.random.Generator`, so a seed fixes the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskfield.data.synthetic import Box, Cylinder, Plane, Shape, Sphere, make_texture

# Prompt vocabulary: class name -> stable class id (Replica-like: not contiguous within a scene).
CLASS_IDS = {
    "floor": 1, "wall": 2, "ceiling": 3, "table": 5, "chair": 6, "sofa": 7, "cabinet": 8,
    "lamp": 9, "plant pot": 10, "mug": 11, "book": 12, "ball": 13,
}
STUFF = ("floor", "wall", "ceiling")
COLOURS = {
    "red": (0.80, 0.15, 0.12), "blue": (0.15, 0.30, 0.80), "green": (0.18, 0.62, 0.22),
    "yellow": (0.90, 0.78, 0.15), "orange": (0.92, 0.50, 0.12), "purple": (0.50, 0.22, 0.62),
    "white": (0.88, 0.88, 0.86),
}


def _v(*x) -> np.ndarray:
    return np.array(x, dtype=np.float64)


def _shade(c, f: float) -> tuple[float, float, float]:
    return tuple(float(np.clip(x * f, 0, 1)) for x in c)


@dataclass
class World:
    """Shapes plus the id bookkeeping of instances, parts and groups."""

    shapes: list[Shape] = field(default_factory=list)
    instance_class: dict[int, str] = field(default_factory=dict)
    instance_phrase: dict[int, str] = field(default_factory=dict)  # "red mug" where an attribute was given
    part_instance: dict[int, int] = field(default_factory=dict)
    part_names: dict[int, str] = field(default_factory=dict)
    groups: list[list[int]] = field(default_factory=list)

    def new_instance(self, cls: str, phrase: str | None = None) -> int:
        inst = len(self.instance_class) + 1
        self.instance_class[inst] = cls
        if phrase:
            self.instance_phrase[inst] = phrase
        return inst

    def new_part(self, inst: int, name: str) -> int:
        part = len(self.part_names) + 1
        self.part_instance[part] = inst
        self.part_names[part] = name
        return part

    def part_to_instance(self) -> np.ndarray:
        """Lookup table [P+1] int32: part id -> instance id (0 -> 0)."""
        lut = np.zeros(len(self.part_names) + 1, np.int32)
        for p, i in self.part_instance.items():
            lut[p] = i
        return lut


# ---- objects -------------------------------------------------------------------------------


def add_room(w: World, rng, lo, hi) -> None:
    """Floor, ceiling and four walls (each its own stuff instance) of the box lo..hi."""
    lo, hi = _v(*lo), _v(*hi)
    floor = make_texture(rng, "checker", (0.55, 0.42, 0.30), (0.72, 0.60, 0.45), 0.8, axes=(0, 1))
    _plane(w, "floor", "floor", lo, _v(0, 0, 1), floor)
    ceil = make_texture(rng, "noise", (0.85, 0.85, 0.82), (0.95, 0.95, 0.92), 1.5)
    _plane(w, "ceiling", "ceiling", hi, _v(0, 0, -1), ceil)
    tints = [(0.75, 0.72, 0.62), (0.62, 0.70, 0.75), (0.78, 0.66, 0.62), (0.66, 0.74, 0.64)]
    walls = [(lo, _v(1, 0, 0), 1), (hi, _v(-1, 0, 0), 1), (lo, _v(0, 1, 0), 0), (hi, _v(0, -1, 0), 0)]
    for (pt, n, ax), tint in zip(walls, tints):
        d = np.zeros(3)
        d[ax] = 1.0  # vertical stripes along the wall
        tex = make_texture(rng, "stripes", tint, _shade(tint, 0.7), 0.5, direction=d)
        _plane(w, "wall", "wall", pt, n, tex)


def _plane(w: World, cls, name, point, normal, tex) -> None:
    inst = w.new_instance(cls)
    w.shapes.append(Plane(point, normal, w.new_part(inst, name), tex))


def add_table(w: World, rng, center, size, yaw=0.0, height=0.75) -> int:
    """Table: a top and four legs. center = (x, y) of the top; size = (length, width)."""
    inst = w.new_instance("table")
    c, s = np.cos(yaw), np.sin(yaw)
    wood = make_texture(rng, "noise", (0.45, 0.28, 0.14), (0.65, 0.45, 0.25), 0.25)
    th = 0.04
    w.shapes.append(Box(_v(center[0], center[1], height - th / 2), _v(size[0] / 2, size[1] / 2, th / 2), yaw,
                        w.new_part(inst, "table top"), wood))
    leg_tex = make_texture(rng, "stripes", (0.30, 0.20, 0.12), (0.40, 0.28, 0.16), 0.15)
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * (size[0] / 2 - 0.06), sy * (size[1] / 2 - 0.06)
            base = _v(center[0] + c * lx - s * ly, center[1] + s * lx + c * ly, 0.0)
            w.shapes.append(Cylinder(base, 0.03, height - th, w.new_part(inst, "table leg"), leg_tex))
    return inst


def add_chair(w: World, rng, pos, yaw, colour) -> int:
    """Chair facing direction yaw: seat, back and four legs."""
    inst = w.new_instance("chair")
    c, s = np.cos(yaw), np.sin(yaw)
    fwd, side = _v(c, s, 0), _v(-s, c, 0)
    p = _v(pos[0], pos[1], 0.0)
    fabric = make_texture(rng, "checker", colour, _shade(colour, 0.7), 0.12, axes=(0, 1))
    w.shapes.append(Box(p + _v(0, 0, 0.45), _v(0.22, 0.22, 0.025), yaw, w.new_part(inst, "chair seat"), fabric))
    back_tex = make_texture(rng, "stripes", colour, _shade(colour, 0.65), 0.1, direction=_v(0, 0, 1))
    back = Box(p - 0.2 * fwd + _v(0, 0, 0.7), _v(0.02, 0.22, 0.23), yaw, w.new_part(inst, "chair back"), back_tex)
    w.shapes.append(back)
    metal = make_texture(rng, "noise", (0.25, 0.25, 0.27), (0.4, 0.4, 0.42), 0.2)
    for a in (-1, 1):
        for b in (-1, 1):
            base = p + 0.18 * a * fwd + 0.18 * b * side
            w.shapes.append(Cylinder(base, 0.02, 0.425, w.new_part(inst, "chair leg"), metal))
    return inst


def add_sofa(w: World, rng, pos, yaw, colour) -> int:
    """Sofa facing yaw: seat base, back and two arms."""
    inst = w.new_instance("sofa")
    c, s = np.cos(yaw), np.sin(yaw)
    fwd, side = _v(c, s, 0), _v(-s, c, 0)
    p = _v(pos[0], pos[1], 0.0)
    tex = make_texture(rng, "noise", colour, _shade(colour, 0.75), 0.3)
    w.shapes.append(Box(p + _v(0, 0, 0.22), _v(0.4, 0.9, 0.22), yaw, w.new_part(inst, "sofa seat"), tex))
    w.shapes.append(Box(p - 0.32 * fwd + _v(0, 0, 0.6), _v(0.1, 0.9, 0.2), yaw, w.new_part(inst, "sofa back"), tex))
    for b in (-1, 1):
        arm = Box(p + 0.95 * b * side + _v(0, 0, 0.3), _v(0.4, 0.08, 0.3), yaw, w.new_part(inst, "sofa arm"), tex)
        w.shapes.append(arm)
    return inst


def add_cabinet(w: World, rng, pos, yaw, size=(0.5, 0.9, 1.6)) -> int:
    inst = w.new_instance("cabinet")
    tex = make_texture(rng, "stripes", (0.80, 0.78, 0.70), (0.62, 0.60, 0.52), 0.3, direction=_v(0, 0, 1))
    half = _v(*size) / 2
    w.shapes.append(Box(_v(pos[0], pos[1], half[2]), half, yaw, w.new_part(inst, "cabinet"), tex))
    return inst


def add_lamp(w: World, rng, pos, z0=0.0, scale=1.0) -> int:
    """Lamp: base, pole and shade (a floor lamp at scale 1, a desk lamp at ~0.3)."""
    inst = w.new_instance("lamp")
    metal = make_texture(rng, "noise", (0.2, 0.2, 0.22), (0.45, 0.45, 0.5), 0.15 * scale + 0.05)
    shade = make_texture(rng, "stripes", (0.95, 0.88, 0.65), (0.80, 0.70, 0.45), 0.12 * scale + 0.04,
                         direction=_v(0, 0, 1))
    x, y = pos
    w.shapes.append(Cylinder(_v(x, y, z0), 0.15 * scale, 0.04 * scale, w.new_part(inst, "lamp base"), metal))
    w.shapes.append(Cylinder(_v(x, y, z0), 0.025 * scale, 1.3 * scale, w.new_part(inst, "lamp pole"), metal))
    w.shapes.append(Cylinder(_v(x, y, z0 + 1.3 * scale), 0.2 * scale, 0.3 * scale, w.new_part(inst, "lamp shade"),
                             shade))
    return inst


def add_plant(w: World, rng, pos, z0=0.0, scale=1.0, colour=(0.70, 0.35, 0.22), phrase=None) -> int:
    """Plant pot: a pot (cylinder) and leaves (a sphere) on top."""
    inst = w.new_instance("plant pot", phrase)
    pot = make_texture(rng, "stripes", colour, _shade(colour, 0.75), 0.1 * scale + 0.02, direction=_v(0, 0, 1))
    leaves = make_texture(rng, "noise", (0.10, 0.40, 0.12), (0.30, 0.62, 0.20), 0.12 * scale + 0.03)
    x, y = pos
    w.shapes.append(Cylinder(_v(x, y, z0), 0.16 * scale, 0.3 * scale, w.new_part(inst, "plant pot pot"), pot))
    w.shapes.append(Sphere(_v(x, y, z0 + 0.48 * scale), 0.22 * scale, w.new_part(inst, "plant pot leaves"), leaves))
    return inst


def add_mug(w: World, rng, pos, z0, colour, phrase=None) -> int:
    """Mug: body (cylinder) and handle (a small box beside it)."""
    inst = w.new_instance("mug", phrase)
    tex = make_texture(rng, "stripes", colour, _shade(colour, 0.6), 0.04, direction=_v(0, 0, 1))
    x, y = pos
    w.shapes.append(Cylinder(_v(x, y, z0), 0.045, 0.1, w.new_part(inst, "mug body"), tex))
    w.shapes.append(Box(_v(x + 0.06, y, z0 + 0.05), _v(0.018, 0.008, 0.032), 0.0, w.new_part(inst, "mug handle"), tex))
    return inst


def add_book(w: World, rng, pos, z0, yaw, colour, size=(0.22, 0.15, 0.04), phrase=None) -> int:
    """Book lying flat: one part; cover texture has bands to be recognisable."""
    inst = w.new_instance("book", phrase)
    tex = make_texture(rng, "stripes", colour, _shade(colour, 0.55), 0.06, direction=_v(np.cos(yaw), np.sin(yaw), 0))
    w.shapes.append(Box(_v(pos[0], pos[1], z0 + size[2] / 2), _v(*size) / 2, yaw, w.new_part(inst, "book"), tex))
    return inst


def add_ball(w: World, rng, pos, z0, radius, colour, phrase=None) -> int:
    inst = w.new_instance("ball", phrase)
    tilt = _v(0.3, 0.2, 1.0) / np.linalg.norm([0.3, 0.2, 1.0])  # bands not parallel to the floor
    tex = make_texture(rng, "stripes", colour, _shade(colour, 0.55), max(radius, 0.03), direction=tilt)
    w.shapes.append(Sphere(_v(pos[0], pos[1], z0 + radius), radius, w.new_part(inst, "ball"), tex))
    return inst


# ---- scenes --------------------------------------------------------------------------------


def _jit(rng, s: float) -> np.ndarray:
    return rng.uniform(-s, s, size=2)


def room_scene(rng: np.random.Generator) -> World:
    """A furnished 6 x 5 x 2.7 m room (replica layout)."""
    w = World()
    add_room(w, rng, (-3.0, -2.5, 0.0), (3.0, 2.5, 2.7))
    tc = _v(0.2, -0.1) + _jit(rng, 0.15)
    table = add_table(w, rng, tc, (1.3, 0.8))
    chair_col = COLOURS[rng.choice(["red", "blue", "green", "purple"])]
    for k, (dx, dy, yaw) in enumerate([(0, -0.75, np.pi / 2), (0, 0.75, -np.pi / 2), (-1.0, 0, 0.0)]):
        add_chair(w, rng, tc + _v(dx, dy) + _jit(rng, 0.05), yaw + rng.uniform(-0.2, 0.2), chair_col)
    add_sofa(w, rng, (0.3, 2.0), -np.pi / 2, COLOURS[rng.choice(["blue", "green", "orange"])])
    add_cabinet(w, rng, (-2.74, -1.2), 0.0)
    add_lamp(w, rng, (2.6, 2.1))
    add_plant(w, rng, (2.5, -2.0))
    add_ball(w, rng, (-1.8, 1.5) + _jit(rng, 0.2), 0.0, 0.15, COLOURS["orange"])
    top = 0.75
    on_table = [add_mug(w, rng, tc + _v(0.35, 0.15), top, COLOURS["red"]),
                add_book(w, rng, tc + _v(-0.3, 0.05), top, 0.3, COLOURS["blue"]),
                add_book(w, rng, tc + _v(-0.3, 0.05), top + 0.04, 0.1, COLOURS["yellow"]),
                add_plant(w, rng, tc + _v(0.05, -0.15), top, scale=0.35, colour=COLOURS["white"])]
    w.groups = [[table, *on_table], on_table[1:3]]
    return w


def room_cameras(rng: np.random.Generator, n: int) -> np.ndarray:
    """c2w [n, 4, 4]: a loop inside the room at head height, each view looking across the room
    with a slowly swinging heading, so furniture is seen from many sides."""
    from maskfield.data.synthetic import look_at

    phase = rng.uniform(0, 2 * np.pi)
    out = []
    for i in range(n):
        a = phase + 2 * np.pi * i / n
        eye = _v(1.9 * np.cos(a), 1.4 * np.sin(a), 1.45 + 0.15 * np.sin(3 * a))
        swing = 0.45 * np.sin(2 * a + 1.0)
        heading = np.arctan2(-eye[1], -eye[0]) + swing
        target = eye + _v(np.cos(heading), np.sin(heading), -0.45)
        out.append(look_at(eye, target))
    return np.stack(out)


def forward_scene(rng: np.random.Generator) -> World:
    """A cluttered desk against the back wall (ovs3d layout)."""
    w = World()
    add_room(w, rng, (-2.5, -3.0, 0.0), (2.5, 1.05, 2.6))
    tc = _v(0.0, 0.62)
    table = add_table(w, rng, tc, (1.5, 0.8))
    top = 0.75
    cols = list(COLOURS)
    pick = lambda: COLOURS[cols[rng.integers(len(cols) - 1)]]  # noqa: E731 (never white)
    on = [add_mug(w, rng, tc + _v(-0.45, -0.2) + _jit(rng, 0.04), top, pick()),
          add_mug(w, rng, tc + _v(0.15, -0.25) + _jit(rng, 0.04), top, pick()),
          add_book(w, rng, tc + _v(-0.15, 0.05), top, 0.2, pick()),
          add_book(w, rng, tc + _v(-0.15, 0.05), top + 0.04, -0.15, pick(), size=(0.2, 0.14, 0.035)),
          add_ball(w, rng, tc + _v(0.42, -0.1) + _jit(rng, 0.04), top, 0.07, pick()),
          add_ball(w, rng, tc + _v(0.3, 0.05) + _jit(rng, 0.03), top, 0.05, pick()),
          add_plant(w, rng, tc + _v(0.5, 0.22), top, scale=0.45),
          add_lamp(w, rng, tc + _v(-0.55, 0.25), z0=top, scale=0.4)]
    w.groups = [[table, *on], on[2:4]]
    return w


def forward_cameras(n: int) -> np.ndarray:
    """c2w [n, 4, 4]: LLFF-like spiral of eyes on a small plane, all looking at the desk."""
    from maskfield.data.synthetic import look_at

    centre, focus = _v(0.0, -0.6, 1.4), _v(0.0, 0.6, 0.85)
    out = []
    for i in range(n):
        a = 2 * np.pi * 2 * i / n  # two turns
        r = 0.4 + 0.6 * i / max(n - 1, 1)
        eye = centre + _v(0.22 * r * np.cos(a), 0.0, 0.12 * r * np.sin(a))
        out.append(look_at(eye, focus + _v(0.15 * (eye[0] - centre[0]), 0, 0)))
    return np.stack(out)


ORBIT_QUERIES = ("red mug", "blue mug", "blue book", "green ball", "yellow book", "white plant pot")


def orbit_scene(rng: np.random.Generator) -> World:
    """A table of coloured objects in the middle of a large room (lerf_mask layout); objects on
    the table carry attribute phrases (the query prompts)."""
    w = World()
    add_room(w, rng, (-4.0, -4.0, 0.0), (4.0, 4.0, 3.0))
    table = add_table(w, rng, (0.0, 0.0), (1.1, 0.8))
    top = 0.75
    j = lambda: _jit(rng, 0.03)  # noqa: E731
    on = [add_mug(w, rng, _v(0.3, 0.2) + j(), top, COLOURS["red"], "red mug"),
          add_mug(w, rng, _v(-0.32, -0.2) + j(), top, COLOURS["blue"], "blue mug"),
          add_book(w, rng, _v(-0.2, 0.18) + j(), top, 0.4, COLOURS["blue"], phrase="blue book"),
          add_ball(w, rng, _v(0.25, -0.18) + j(), top, 0.06, COLOURS["green"], "green ball"),
          add_book(w, rng, _v(0.05, -0.02) + j(), top, -0.3, COLOURS["yellow"], size=(0.18, 0.12, 0.03),
                   phrase="yellow book"),
          add_plant(w, rng, _v(0.02, 0.25) + j(), top, scale=0.3, colour=COLOURS["white"], phrase="white plant pot")]
    for yaw in (0.0, np.pi):
        add_chair(w, rng, _v(-0.85 * np.cos(yaw), 0.0), yaw, COLOURS["orange"])
    add_sofa(w, rng, (0.0, 3.3), -np.pi / 2, COLOURS["purple"])
    add_cabinet(w, rng, (3.74, -1.0), 0.0)
    w.groups = [[table, *on]]
    return w


def orbit_camera(angle: float, radius: float = 1.45, height: float = 1.55) -> np.ndarray:
    """c2w [4, 4] of the orbit around the table at `angle` radians."""
    from maskfield.data.synthetic import look_at

    eye = _v(radius * np.cos(angle), radius * np.sin(angle), height)
    return look_at(eye, _v(0.0, 0.0, 0.78))
