"""Scenes: one `Scene` object from any supported on-disk layout (see `load_scene`)."""

from maskfield.data.scene import Cameras, Scene, SceneHierarchy

__all__ = ["Cameras", "Scene", "SceneHierarchy", "load_scene"]


def load_scene(*args, **kwargs):  # imported lazily so `maskfield.data` stays cheap to import
    from maskfield.data.loader import load_scene as _load_scene

    return _load_scene(*args, **kwargs)
