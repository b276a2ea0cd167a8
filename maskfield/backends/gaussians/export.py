"""Export trained Gaussians as 3DGS PLY files that common splat viewers open.

`<out>`: one vertex per Gaussian with the 3DGS reference's properties, in its order and
encoding (float32, binary little-endian):
    x y z  nx ny nz (zeros)  f_dc_0..2  f_rest_0..44 (channel-major, zero beyond the trained degree)
    opacity (logit)  scale_0..2 (log)  rot_0..3 (w, x, y, z)
With a mask-field checkpoint, the per-Gaussian mask features follow as mask_0..mask_{D_m-1}
(viewers ignore properties they do not know).

`<out stem>-segmented.ply` (with a mask-field checkpoint and text features): the same Gaussians
coloured by predicted class, no view dependence. A Gaussian's class is that of its feature's best
query (the query of largest mask logit Q . f), and a query's class the prompt whose text feature
is closest to its semantic token; Gaussians whose best query's probability is under 0.5 belong to
no query and are grey. `<out stem>-classes.json` lists the colour of each class.
"""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path

import numpy as np
import torch

from maskfield.backends.gaussians.checkpoint import BACKEND, load_gaussians
from maskfield.backends.gaussians.sh import n_coefficients, rgb_to_sh0
from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.checkpoints import load_checkpoint

PLY_SH_DEGREE = 3  # the 3DGS reference always writes degree-3 coefficients (45 f_rest)
NO_CLASS = (0.5, 0.5, 0.5)


def ply_properties(params: dict[str, torch.Tensor], sh_degree: int = PLY_SH_DEGREE) -> dict[str, np.ndarray]:
    """The 3DGS vertex properties of the Gaussians `params`, name -> [N] float32, in file order."""
    means = params["means"].detach().cpu().float().numpy()
    N = len(means)
    rest = np.zeros((N, n_coefficients(sh_degree) - 1, 3), np.float32)
    if "shN" in params:
        shN = params["shN"].detach().cpu().float().numpy()[:, : rest.shape[1]]
        rest[:, : shN.shape[1]] = shN
    columns = [("x", means[:, 0]), ("y", means[:, 1]), ("z", means[:, 2])]
    columns += [(n, np.zeros(N, np.float32)) for n in ("nx", "ny", "nz")]
    sh0 = params["sh0"].detach().cpu().float().numpy()[:, 0, :]
    columns += [(f"f_dc_{c}", sh0[:, c]) for c in range(3)]
    flat_rest = rest.transpose(0, 2, 1).reshape(N, -1)  # channel-major, as the reference flattens it
    columns += [(f"f_rest_{i}", flat_rest[:, i]) for i in range(flat_rest.shape[1])]
    columns += [("opacity", params["opacities"].detach().cpu().float().numpy())]
    scales, quats = params["scales"].detach().cpu().float().numpy(), params["quats"].detach().cpu().float().numpy()
    columns += [(f"scale_{i}", scales[:, i]) for i in range(3)] + [(f"rot_{i}", quats[:, i]) for i in range(4)]
    return {name: np.ascontiguousarray(col, np.float32) for name, col in columns}


def write_ply(path: str | os.PathLike, properties: dict[str, np.ndarray]) -> Path:
    """A binary little-endian PLY with one `vertex` element of float32 `properties` (atomic)."""
    n = len(next(iter(properties.values())))
    table = np.empty(n, dtype=[(name, "<f4") for name in properties])
    for name, col in properties.items():
        table[name] = col
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in properties] + ["end_header"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(table.tobytes())
    return Path(path)


def read_mask_features(path: str | os.PathLike, scene, n_gaussians: int, rgb_path) -> dict:
    """A gaussians mask-field checkpoint of this scene, trained on the Gaussians of `rgb_path`."""
    from maskfield.io.digest import file_digest

    state = load_checkpoint(path, "mask-field checkpoint", "mask_field")
    cfg = state.get("config", {})
    if cfg.get("backend") != BACKEND or "features" not in state.get("feature_field", {}):
        raise MaskfieldError(f"mask-field checkpoint {path} is not from the {BACKEND} backend; pass maskfield-{BACKEND}.pt.")
    if (cfg.get("dataset"), cfg.get("scene")) != (scene.dataset, scene.name):
        raise MaskfieldError(f"mask-field checkpoint {path} was trained on {cfg.get('dataset')}/{cfg.get('scene')}, "
                             f"not {scene.dataset}/{scene.name}; pass the checkpoint of this scene.")
    if cfg.get("geometry", {}).get("rgb_digest") != file_digest(rgb_path) or \
            state["feature_field"]["features"].shape[0] != n_gaussians:
        raise MaskfieldError(f"mask-field checkpoint {path} was trained on other Gaussians than {rgb_path}; rerun the "
                             f"`geometry` and `mask_field` rules after the `rgb_field` rule.")
    return state


def class_palette(n: int) -> np.ndarray:
    """[n, 3] distinct colours in [0, 1] (hues spaced by the golden ratio)."""
    return np.array([colorsys.hsv_to_rgb((0.61803398875 * i) % 1.0, 0.75, 0.95) for i in range(n)], np.float32)


def gaussian_classes(state: dict, text: np.ndarray) -> np.ndarray:
    """[N] class index of every Gaussian (-1: its best query's probability is under 0.5).

    Args:
        state: a gaussians mask-field checkpoint. text: [C, D_s] class text features.
    """
    from maskfield.backends.gaussians.feature_field import GaussianMaskSettings
    from maskfield.distill.mask_field import QueryHeads
    from maskfield.settings import from_dict

    cfg = state["config"]
    s = from_dict(GaussianMaskSettings, cfg["settings"], where="checkpoint settings")
    heads = QueryHeads(cfg["mask_dim"], cfg["sem_dim"], s.heads)
    heads.load_state_dict(state["heads"])
    with torch.no_grad():
        logits = state["feature_field"]["features"].float() @ heads.queries().T  # [N, N_K]
        best = logits.argmax(1)
        sem = torch.nn.functional.normalize(heads.semantics(), dim=1)
        query_class = (sem @ torch.nn.functional.normalize(torch.as_tensor(text).float(), dim=1).T).argmax(1)
        cls = query_class[best]
        cls[logits.gather(1, best[:, None])[:, 0] < 0] = -1  # sigmoid < 0.5
    return cls.numpy()


def export(scene, rgb_path: str | os.PathLike, out: str | os.PathLike, mask_checkpoint: str | os.PathLike | None = None,
           geometry: str | os.PathLike | None = None, labeller=None) -> Path:
    """Write the trained Gaussians of `scene` as a 3DGS PLY `out` (with mask features when a
    mask-field checkpoint is given) and, given a labeller too, the segmented variant beside it
    (`<out stem>-segmented.ply`, each Gaussian coloured by the class of its most probable query,
    and `<out stem>-classes.json`).

    Args:
        geometry: optional geometry-gaussians.h5; when given, it must be the one the mask field was trained on.
        labeller: a maskfield.stages.export.PointLabeller (its names and their text features).
    Returns:
        `out`.
    """
    tg = load_gaussians(rgb_path, "cpu", scene)
    params = dict(tg.params.items())
    props = ply_properties(params)
    if mask_checkpoint is None:
        return write_ply(out, props)
    state = read_mask_features(mask_checkpoint, scene, len(params["means"]), rgb_path)
    if geometry is not None:
        check_geometry(state, geometry, mask_checkpoint)
    feats = state["feature_field"]["features"].float().numpy()
    written = write_ply(out, {**props, **{f"mask_{i}": feats[:, i] for i in range(feats.shape[1])}})
    if labeller is not None:
        export_segmented(state, props, Path(out), labeller.names, np.stack([labeller.text[n] for n in labeller.names]))
    return written


def check_geometry(state: dict, geometry, mask_checkpoint) -> None:
    """The mask field must have been trained on this very geometry cache."""
    from maskfield.io.geometry import read_geometry

    attrs = read_geometry(geometry).attrs
    here = {k: str(attrs.get(k, "")) for k in state["config"].get("geometry", {})}
    if here != state["config"].get("geometry"):
        raise MaskfieldError(f"mask-field checkpoint {mask_checkpoint} was trained on another geometry cache than "
                             f"{geometry}; pass the geometry-{BACKEND}.h5 it was trained on.")


def export_segmented(state, props, out: Path, names: list[str], text: np.ndarray) -> list[Path]:
    """`<out stem>-segmented.ply` coloured by class and `<out stem>-classes.json`. text: [C, D]."""
    prompts = list(names)
    if not prompts:
        raise MaskfieldError("the scene has no prompts to colour the Gaussians by; configure its class or query prompts.")
    cls = gaussian_classes(state, text)
    palette = class_palette(len(prompts))
    rgb = np.where(cls[:, None] >= 0, palette[np.maximum(cls, 0)], np.array(NO_CLASS, np.float32))
    sh0 = rgb_to_sh0(torch.from_numpy(rgb)).numpy()
    seg = {**props, **{f"f_dc_{c}": sh0[:, c] for c in range(3)}}
    seg.update({k: np.zeros_like(v) for k, v in seg.items() if k.startswith("f_rest_")})
    ply = write_ply(out.with_name(out.stem + "-segmented.ply"), seg)
    legend = {"classes": [{"name": p, "rgb": [round(float(c), 4) for c in palette[i]], "gaussians": int((cls == i).sum())}
                          for i, p in enumerate(prompts)],
              "no_query": {"rgb": list(NO_CLASS), "gaussians": int((cls < 0).sum())}}
    with atomic_path(out.with_name(out.stem + "-classes.json")) as tmp:
        Path(tmp).write_text(json.dumps(legend, indent=2))
    return [ply, out.with_name(out.stem + "-classes.json")]
