"""Simulated teacher: SAM-like masks and CLIP-like embeddings from ground-truth instances.

It lets the 3D part be measured on hardware without SAM/CLIP weights. Masks come at several
granularities (level 0 parts, 1 objects, 2 groups of touching objects, 3 background stuff) and are
made messy the way SAM is: boundaries jittered (random erosion/dilation plus a smooth random
displacement field), masks randomly dropped, pairs of touching objects merged, small spurious
fragments added, optionally masks moved to another of SAM's three scales (`scale_ambiguity`),
and every decision redrawn per view (so views disagree). Embeddings are the
pixel-share mix of the covered classes' text vectors (from the simulated text encoder) plus
noise and occasional confusion with another class.

Determinism: view v draws from `np.random.default_rng([seed, v])`, so a view's masks do not
depend on which other views are processed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from maskfield.data.scene import SceneHierarchy
from maskfield.teachers.text import TextEncoder

LEVEL_ORDER = (1, 2, 0, 3)  # official storage order m, l, s; stuff last
SAM_SCALE_LEVELS = (0, 1, 2)
"""The levels of SAM's three multimask scales s, m, l (3, the simulated stuff, is none of them)."""
AMBIGUITY_STREAM = 1
"""Third seed word of the random stream `scale_ambiguity` draws from (the masks' own is [seed, v])."""


@dataclass
class SimulatedMaskSettings:
    """`teachers.simulated_masks` config section. Defaults: moderately messy, about SAM-like."""

    seed: int = 0
    downscale: int = 1
    """Masks are stored at the layout's native image size (`Scene.native_size`, before any reader
    downscale) divided by this, floored, as SAM's masks (`teachers.sam.downscale`); the instance
    maps are resampled nearest to it."""
    jitter_px: float = 1.0
    """Amplitude (std, pixels at mask resolution) of the smooth boundary displacement; 0 = none."""
    jitter_scale: float = 6.0
    """Correlation length (pixels) of the displacement field: larger = smoother wobble."""
    morph_px: int = 1
    """Each mask is eroded or dilated by a random radius in [-morph_px, morph_px]."""
    drop_prob: float = 0.1
    """Probability that a mask is missing from a view."""
    merge_prob: float = 0.05
    """Probability, per object, that its object-level mask is merged with a touching object's."""
    fragments_per_view: float = 1.0
    """Mean (Poisson) number of small spurious masks per view."""
    fragment_px: int = 3
    """Largest radius of a spurious fragment (pixels)."""
    min_area: int = 4
    """Masks smaller than this after jitter are discarded (SAM's min region area, scaled down)."""
    stuff_level: int = 3
    """Level of background stuff masks: 3 (own level) or 1 (treated as objects)."""
    scale_ambiguity: float = 0.0
    """Probability, per mask and view, that a part, object or group mask (or fragment) comes at
    one of SAM's two other scales (levels 0-2), drawn uniformly, instead of its own. SAM's
    multimask scales are not the same level of the scene in every view: a cup alone at one scale
    here, the cup with its saucer at the same scale there. The masks themselves do not change
    (the levels are drawn from a random stream of their own), only the scale each is stored at,
    which is what per-scale features (LangSplat, `maskfield dense --source sam-s|m|l`) depend on
    and the mask field does not. 0 = every mask at its own level."""
    scale_ambiguity_per: str = "view"
    """How the scale ambiguity is drawn: "view", for each mask of each view on its own (views
    disagree, as they do about SAM's boundaries), or "scene", once for each part, object and
    group of the scene, which then comes at that other scale in every view (SAM taking a cup on
    a saucer for one thing from every side). Fragments are drawn per view either way."""

    def __post_init__(self) -> None:
        for name in ("drop_prob", "merge_prob", "scale_ambiguity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.downscale < 1 or self.stuff_level not in (1, 3):
            raise ValueError("downscale must be >= 1 and stuff_level 1 or 3")
        if self.scale_ambiguity_per not in ("view", "scene"):
            raise ValueError(f"scale_ambiguity_per must be 'view' or 'scene', not {self.scale_ambiguity_per!r}")


@dataclass
class SimulatedEmbedSettings:
    """`teachers.simulated_embeddings` config section."""

    seed: int = 0
    dim: int = 512
    """Embedding dimension of the simulated text space."""
    text_seed: int = 0
    """Seed of the simulated text encoder (part of the model id: simulated:dim=..:seed=..)."""
    noise: float = 0.5
    """Norm of the Gaussian noise added to a mask's unit class mix (per-dim std noise/sqrt(dim))."""
    confusion_prob: float = 0.05
    """Probability that a mask's embedding is also pulled toward a random other class."""
    confusion_weight: float = 1.5
    """That other class is added with a weight drawn uniformly from [0, confusion_weight]."""


def resize_nearest(label: np.ndarray, h: int, w: int) -> np.ndarray:
    """[H, W] -> [h, w] by sampling at the target pixel centres (no new values)."""
    H, W = label.shape
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
    return label[rows[:, None], cols[None, :]]


def jitter_mask(mask: np.ndarray, rng: np.random.Generator, s: SimulatedMaskSettings) -> np.ndarray:
    """Random erosion/dilation, then a smooth random displacement of the boundary. [h, w] bool."""
    out = mask
    if s.morph_px > 0:
        r = int(rng.integers(-s.morph_px, s.morph_px + 1))
        if r > 0:
            out = ndimage.binary_dilation(out, iterations=r)
        elif r < 0:
            out = ndimage.binary_erosion(out, iterations=-r, border_value=1)
    if s.jitter_px > 0:
        h, w = mask.shape
        field = rng.standard_normal((2, h, w))
        field = np.stack([ndimage.gaussian_filter(f, s.jitter_scale, mode="wrap") for f in field])
        field *= s.jitter_px / np.maximum(field.std(axis=(1, 2), keepdims=True), 1e-12)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        out = ndimage.map_coordinates(out.astype(np.uint8), [yy + field[0], xx + field[1]], order=0, mode="nearest") > 0
    return out


@dataclass
class ViewLabels:
    """Ground-truth labels of one view at mask resolution."""

    instance: np.ndarray  # [h, w] int32, 0 = nothing
    part: np.ndarray | None  # [h, w] int32 or None


def view_labels(hier: SceneHierarchy, v: int, h: int, w: int) -> ViewLabels:
    inst = resize_nearest(hier.instance_maps[v], h, w)
    part = None if hier.part_maps is None else resize_nearest(hier.part_maps[v], h, w)
    return ViewLabels(inst, part)


def touching(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two [h, w] masks touch (4-neighbourhood)."""
    return bool(np.any(ndimage.binary_dilation(a) & b))


def object_masks(lab: ViewLabels, objects: list[int], rng: np.random.Generator, merge_prob: float) -> list[tuple[np.ndarray, int]]:
    """Object-level masks and the object each is drawn from; with probability merge_prob an
    object is merged with a touching one."""
    masks = {i: lab.instance == i for i in objects}
    merged: set[int] = set()
    out = []
    for i in rng.permutation(objects):
        if i in merged:
            continue
        merged.add(int(i))
        if rng.random() < merge_prob:
            near = [j for j in objects if j not in merged and touching(masks[i], masks[j])]
            if near:
                j = int(rng.choice(near))
                merged.add(j)
                out.append((masks[i] | masks[j], int(i)))
                continue
        out.append((masks[i], int(i)))
    return out


Entity = tuple[int, int]
"""(kind, id) of what a mask shows in the scene: (0, part id), (1, instance id) for an object (a
merged pair: the object it is drawn from), (2, group index), (3, instance id) for stuff."""


def ground_truth_candidates(hier: SceneHierarchy, lab: ViewLabels, rng: np.random.Generator,
                            s: SimulatedMaskSettings) -> list[tuple[np.ndarray, int, Entity]]:
    """Exact masks of one view, with merges applied: list of ([h, w] bool, level, entity)."""
    present = [int(i) for i in np.unique(lab.instance) if i > 0]
    stuff = [i for i in present if hier.instance_class.get(i) in hier.stuff_classes]
    objects = [i for i in present if i not in stuff]
    cands = [(m, 1, (1, i)) for m, i in object_masks(lab, objects, rng, s.merge_prob)]
    for g, group in enumerate(hier.groups):
        members = [i for i in group if i in objects]
        if members:
            cands.append((np.isin(lab.instance, members), 2, (2, g)))
    if lab.part is not None:
        for p in np.unique(lab.part):
            if p > 0 and hier.part_instance.get(int(p)) in objects:
                cands.append((lab.part == p, 0, (0, int(p))))
    cands += [(lab.instance == i, s.stuff_level, (3, i)) for i in stuff]
    return cands


def fragments(h: int, w: int, rng: np.random.Generator, s: SimulatedMaskSettings) -> list[tuple[np.ndarray, int]]:
    """Small spurious blobs (discs) at random places, at level 0 or 1."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(rng.poisson(s.fragments_per_view)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.0, max(1.0, s.fragment_px))
        out.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, int(rng.integers(0, 2))))
    return out


def simulate_view_masks(hier: SceneHierarchy, v: int, h: int, w: int, s: SimulatedMaskSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAM-like masks of view v.

    Returns:
        masks [k, h, w] bool, scores [k] float32 in (0, 1], levels [k] int8; ordered by LEVEL_ORDER.
    """
    rng = np.random.default_rng([s.seed, v])
    lab = view_labels(hier, v, h, w)
    out: list[tuple[np.ndarray, float, int]] = []
    entities: list[Entity | None] = []
    for gt, level, entity in ground_truth_candidates(hier, lab, rng, s):
        if rng.random() < s.drop_prob:
            continue
        m = jitter_mask(gt, rng, s)
        if m.sum() < s.min_area:
            continue
        iou = (m & gt).sum() / max((m | gt).sum(), 1)
        # Like SAM's predicted IoU x stability: high for clean masks, lower for damaged ones.
        out.append((m, float(iou * rng.uniform(0.85, 1.0)), level))
        entities.append(entity)
    for m, level in fragments(h, w, rng, s):
        if m.sum() >= s.min_area:
            out.append((m, float(rng.uniform(0.7, 0.85)), level))
            entities.append(None)
    if s.scale_ambiguity > 0:
        moved = ambiguous_levels(np.array([o[2] for o in out], np.int64), v, s, entities)
        out = [(m, score, int(level)) for (m, score, _), level in zip(out, moved)]
    out.sort(key=lambda t: LEVEL_ORDER.index(t[2]))  # stable: keeps the draw order within a level
    if not out:
        return np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros(0, np.int8)
    return (np.stack([o[0] for o in out]), np.array([o[1] for o in out], np.float32),
            np.array([o[2] for o in out], np.int8))


def ambiguous_levels(levels: np.ndarray, v: int, s: SimulatedMaskSettings,
                     entities: list[Entity | None] | None = None) -> np.ndarray:
    """View v's mask levels with SAM's scale ambiguity: each level in `SAM_SCALE_LEVELS` is
    replaced, with probability `s.scale_ambiguity`, by one of the other two drawn uniformly.

    Args:
        levels: [k] int, the masks' own levels in draw order.
        entities: [k] what each mask shows (`Entity`; None for a fragment), used when
            `s.scale_ambiguity_per` is "scene".
    Returns:
        [k] int64 levels; stuff (level 3) kept. Per view, two draws per mask whatever its level,
        from `np.random.default_rng([seed, v, AMBIGUITY_STREAM])`, so a mask's draw depends on
        its position only. Per scene, a mask showing an entity takes that entity's two draws from
        `np.random.default_rng([seed, AMBIGUITY_STREAM, kind, id])`, the same in every view.
    """
    rng = np.random.default_rng([s.seed, v, AMBIGUITY_STREAM])
    levels = np.asarray(levels, np.int64)
    n = len(SAM_SCALE_LEVELS)
    draw = rng.random(len(levels))
    step = rng.integers(1, n, len(levels))  # 1 or 2 scales on, cyclically
    if s.scale_ambiguity_per == "scene" and entities is not None:
        for k, entity in enumerate(entities):
            if entity is not None:
                own = np.random.default_rng([s.seed, AMBIGUITY_STREAM, *entity])
                draw[k], step[k] = own.random(), own.integers(1, n)
    move = (draw < s.scale_ambiguity) & np.isin(levels, SAM_SCALE_LEVELS)
    return np.where(move, (levels + step) % n, levels)


def class_shares(masks: np.ndarray, class_map: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each class among a mask's labelled pixels.

    Args:
        masks: [m, h, w] bool; class_map: [h, w] int, -1 = unlabelled.
    Returns:
        [m, C] float64, rows sum to 1 (0 for masks over unlabelled pixels only).
    """
    labelled = class_map.reshape(-1) >= 0
    onehot = np.zeros((labelled.size, n_classes))
    onehot[np.flatnonzero(labelled), class_map.reshape(-1)[labelled]] = 1.0
    counts = masks.reshape(len(masks), -1).astype(np.float64) @ onehot
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def simulate_view_embeddings(masks: np.ndarray, class_map: np.ndarray, class_vecs: np.ndarray, v: int, s: SimulatedEmbedSettings) -> np.ndarray:
    """CLIP-like embeddings of one view's masks.

    Args:
        masks: [m, h, w] bool; class_map: [h, w] int (-1 unlabelled); class_vecs: [C, D] unit rows.
    Returns:
        [m, D] float32 unit rows.
    """
    return embeddings_of_shares(class_shares(masks, class_map, len(class_vecs)), class_vecs, v, s)


def embeddings_of_shares(shares: np.ndarray, class_vecs: np.ndarray, v: int, s: SimulatedEmbedSettings) -> np.ndarray:
    """CLIP-like embeddings of view v's regions from their class shares (`class_shares`).

    Args:
        shares: [m, C] share of each class among a region's labelled pixels; class_vecs: [C, D] unit rows.
    Returns:
        [m, D] float32 unit rows: the class mix, sometimes pulled toward another class, plus noise.
    """
    rng = np.random.default_rng([s.seed, v])
    m, (C, D) = len(shares), class_vecs.shape
    mix = shares @ class_vecs
    confused = rng.random(m) < s.confusion_prob
    other = rng.integers(0, C, m)
    mix[confused] += rng.uniform(0, s.confusion_weight, confused.sum())[:, None] * class_vecs[other[confused]]
    mix /= np.maximum(np.linalg.norm(mix, axis=1, keepdims=True), 1e-12)
    emb = mix + rng.standard_normal((m, D)) * (s.noise / np.sqrt(D))
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def class_vocabulary(hier: SceneHierarchy, encoder: TextEncoder) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names, their text vectors [C, D], and a lookup instance id -> class index (-1 none).

    An instance with a descriptive phrase ("red mug") is embedded as that phrase rather than its
    bare class ("mug"): CLIP sees colour, so its crop of the red mug is closer to "red mug" than
    to "blue mug"; embedding both as "mug" would make the two indistinguishable to any query.
    """
    label = {i: hier.instance_phrase.get(i, c) for i, c in hier.instance_class.items()}
    names = sorted(set(label.values()))
    lut = np.full(max(label, default=0) + 1, -1, np.int64)
    for i, c in label.items():
        lut[i] = names.index(c)
    return names, encoder(names), lut
