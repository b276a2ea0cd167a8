"""`load_scene`: one `Scene` from a scene folder in any supported on-disk layout.

Reader settings (the `--reader-settings` JSON, the `reader` section of a dataset in the config)
are the fields of the layout's settings dataclass: `ReplicaSettings`, `Ovs3dSettings`,
`LerfMaskSettings`; unknown keys are errors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from maskfield.data.lerf_mask import LerfMaskSettings, load_lerf_mask
from maskfield.data.ovs3d import Ovs3dSettings, load_ovs3d
from maskfield.data.replica import ReplicaSettings, load_replica
from maskfield.data.scene import Scene
from maskfield.data.splits import evenly_spaced
from maskfield.data.synthetic_gt import has_sidecar
from maskfield.errors import MaskfieldError
from maskfield.settings import from_dict

log = logging.getLogger("maskfield")

# layout -> (settings dataclass, reader(scene_dir, settings, name, dataset) -> Scene, evaluation
# protocol of the layout's benchmark: maskfield.evaluate.protocols)
READERS: dict[str, tuple[type, Callable[..., Scene], str]] = {
    "replica": (ReplicaSettings, load_replica, "replica"),
    "ovs3d": (Ovs3dSettings, load_ovs3d, "3dovs"),
    "lerf_mask": (LerfMaskSettings, load_lerf_mask, "lerf_mask"),
}


def load_scene(layout: str, scene_dir: str | Path, settings: dict[str, Any] | None = None, *,
               dataset: str | None = None, name: str | None = None) -> Scene:
    """Read the scene in `scene_dir`, laid out as `layout` ("replica" | "ovs3d" | "lerf_mask").

    Args:
        settings: reader settings as a dict (keys of the layout's settings dataclass).
        dataset: name recorded in the Scene; default "synthetic" when the folder has the
            synthesizer's `synthetic_gt/` sidecar, else the layout.
        name: scene name; default the folder's name.
    """
    if layout not in READERS:
        raise MaskfieldError(f"Unknown scene layout '{layout}'; the known layouts are {', '.join(READERS)}.")
    scene_dir = Path(scene_dir).expanduser()
    if not scene_dir.is_dir():
        raise MaskfieldError(
            f"Scene folder {scene_dir} does not exist; download the {layout} dataset as described in the "
            f"README section 'Real data' (or run `maskfield synthesize`) and point --scene-dir at the scene."
        )
    settings_cls, reader, protocol = READERS[layout]
    parsed = from_dict(settings_cls, settings, where=f"reader settings for layout {layout}")
    name = name or scene_dir.resolve().name
    dataset = dataset or ("synthetic" if has_sidecar(scene_dir) else layout)
    scene = reader(scene_dir, parsed, name, dataset)
    scene.protocol = scene.protocol or protocol
    scene.distill_ids = evenly_spaced(scene.train_ids, parsed.distill_fraction)
    log.info("loaded %s", scene.summary())
    if len(scene.distill_ids) < len(scene.train_ids):
        log.info("distillation reads %d of the %d training views (distill_fraction %g)", len(scene.distill_ids),
                 len(scene.train_ids), parsed.distill_fraction)
    return scene
