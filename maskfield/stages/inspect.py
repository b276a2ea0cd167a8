"""`maskfield inspect`: load a scene and print what the readers made of it."""

from __future__ import annotations

import numpy as np

from maskfield.data.scene import Scene
from maskfield.stages.common import add_scene_args, scene_from_args


def describe(scene: Scene) -> str:
    """The scene summary plus ground-truth coverage, bounds and the optional extras, one fact a line."""
    lines = [scene.summary()]
    if scene.task == "segmentation":
        planes = [m for m in scene.seg_masks.values()]
        labelled = float(np.mean([m.any(0).mean() for m in planes])) if planes else 0.0
        lines.append(f"GT: {len(planes)} annotated views, {labelled:.1%} of their pixels labelled")
        if planes:
            share = np.mean([m.reshape(len(m), -1).mean(1) for m in planes], axis=0)
            lines.append("classes: " + ", ".join(f"{c} {s:.1%}" for c, s in zip(scene.class_prompts, share)))
    else:
        n = sum(len(m) for m in scene.query_masks.values())
        cover = [float(mask.mean()) for masks in scene.query_masks.values() for mask in masks.values()]
        lines.append(f"GT: {len(scene.query_masks)} annotated views, {n} masks, mean mask area {np.mean(cover) if cover else 0:.1%}")
        lines.append("queries: " + ", ".join(scene.query_prompts))
    if scene.near_far is not None:
        lines.append(f"near/far: {scene.near_far[0]:.3g} / {scene.near_far[1]:.3g}")
    if scene.aabb is not None:
        lines.append(f"aabb: min {np.round(scene.aabb[0], 3).tolist()} max {np.round(scene.aabb[1], 3).tolist()}")
    centres = scene.cameras.c2w[:, :3, 3]
    lines.append(f"camera centres span {np.round(centres.min(0), 3).tolist()} to {np.round(centres.max(0), 3).tolist()}")
    if scene.depth is not None:
        valid = scene.depth > 0
        lines.append(f"depth: {valid.mean():.1%} of pixels, {scene.depth[valid].min():.3g} to {scene.depth[valid].max():.3g}" if valid.any() else "depth: empty")
    if scene.hierarchy is not None:
        h = scene.hierarchy
        lines.append(f"hierarchy: {len(h.instance_class)} instances, {len(h.part_instance)} parts, {len(h.groups)} groups, stuff {list(h.stuff_classes)}")
    return "\n".join(lines)


def run(args) -> None:
    print(describe(scene_from_args(args)))


def register(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="load a scene and print a summary of its views, cameras and ground truth")
    add_scene_args(p)
    p.set_defaults(func=run)
