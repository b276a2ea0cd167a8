"""A trained scene, found where the workflow puts it: its config entry and its standard result paths.

`maskfield query` and `maskfield export` take `--dataset D --scene S` and read the rest here:
the scene's layout, folder and reader settings from the config file (as the workflow merges
them: the dataset's `reader:` then the scene's), the `inference:` settings, and the paths
`results/fields/D/S/{rgb,geometry,maskfield}-<backend>`, `results/cache/D/S/{embeddings,text}.h5`.
Flags override each of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import InferenceSettings
from maskfield.settings import from_dict

DEFAULT_CONFIG = "config/config.yaml"


@dataclass
class ScenePaths:
    """The result files of one trained scene and backend."""

    rgb: Path  # rgb-<backend>.pt
    geometry: Path  # geometry-<backend>.h5
    checkpoint: Path  # maskfield-<backend>.pt
    embeddings: Path  # embeddings.h5 (names the text model)

    @classmethod
    def standard(cls, results: str | Path, dataset: str, scene: str, backend: str) -> "ScenePaths":
        fields = Path(results) / "fields" / dataset / scene
        return cls(fields / f"rgb-{backend}.pt", fields / f"geometry-{backend}.h5", fields / f"maskfield-{backend}.pt",
                   Path(results) / "cache" / dataset / scene / "embeddings.h5")


@dataclass
class SceneEntry:
    """Where and how to read a scene, from the config."""

    layout: str
    scene_dir: Path
    reader: dict


def read_config(path: str | Path) -> dict:
    """The YAML config file as a dict; one clear error when it is missing or not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MaskfieldError(f"config file {path} does not exist; run from the repository root or pass --config.")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MaskfieldError(f"config file {path} is not valid YAML ({exc}).") from exc
    if not isinstance(config, dict):
        raise MaskfieldError(f"config file {path} does not hold a mapping of settings; check its contents.")
    return config


def scene_entry(config: dict, dataset: str, scene: str, where: str) -> SceneEntry:
    """The layout, folder and merged reader settings of `dataset`/`scene` in `config`."""
    datasets = config.get("datasets") or {}
    if dataset not in datasets:
        raise MaskfieldError(f"dataset {dataset!r} is not under `datasets:` in {where} (known: {sorted(datasets)}).")
    ds = datasets[dataset]
    scenes = ds.get("scenes") or {}
    if scene not in scenes:
        raise MaskfieldError(f"scene {scene!r} is not under `datasets: {dataset}: scenes:` in {where} "
                             f"(known: {sorted(scenes)}).")
    sc = scenes[scene] or {}
    if "layout" not in sc or "root" not in ds:
        raise MaskfieldError(f"{where} gives no `layout` for {dataset}/{scene} or no `root` for {dataset}; add them.")
    reader = {**(ds.get("reader") or {}), **(sc.get("reader") or {})}
    return SceneEntry(sc["layout"], Path(ds["root"]) / scene, reader)


def inference_settings(config: dict, where: str) -> InferenceSettings:
    """The config's `inference:` section as settings (missing keys take their defaults)."""
    return from_dict(InferenceSettings, config.get("inference") or {}, where=f"{where} (inference)")


def add_trained_scene_args(p: argparse.ArgumentParser, backends: tuple[str, ...], embeddings: bool = True) -> None:
    """The flags that locate a trained scene (`trained_scene_from_args`); `--embeddings` where it is read."""
    p.add_argument("--dataset", required=True, help="dataset name, a key of `datasets:` in the config")
    p.add_argument("--scene", required=True, help="scene name, a key of `datasets: <dataset>: scenes:`")
    p.add_argument("--backend", default="nerf", choices=backends, help="3D backend of the trained fields")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config file (layout, root, reader and inference settings)")
    p.add_argument("--results", default="results", help="the workflow's results folder")
    p.add_argument("--scene-dir", default=None, help="scene folder (default: the dataset's root / scene)")
    p.add_argument("--geometry", default=None, help="geometry-<backend>.h5 (default: the standard result path)")
    p.add_argument("--checkpoint", default=None, help="maskfield-<backend>.pt (default: the standard result path)")
    if embeddings:
        p.add_argument("--embeddings", default=None, help="embeddings.h5 naming the text model (default: standard path)")


@dataclass
class TrainedScene:
    """A scene with the paths of its trained fields and the config's inference settings."""

    scene: object  # maskfield.data.Scene
    paths: ScenePaths
    inference: InferenceSettings
    backend: str


def trained_scene_from_args(args: argparse.Namespace) -> TrainedScene:
    """Load the scene named by `add_trained_scene_args` flags and locate its result files."""
    from maskfield.data import load_scene

    config = read_config(args.config)
    entry = scene_entry(config, args.dataset, args.scene, args.config)
    paths = ScenePaths.standard(args.results, args.dataset, args.scene, args.backend)
    for name in ("geometry", "checkpoint", "embeddings"):
        if getattr(args, name, None):
            setattr(paths, name, Path(getattr(args, name)))
    scene = load_scene(entry.layout, args.scene_dir or entry.scene_dir, entry.reader, dataset=args.dataset, name=args.scene)
    return TrainedScene(scene, paths, inference_settings(config, args.config), args.backend)


def require_files(files: dict[str, Path], trained: TrainedScene) -> None:
    """One clear error naming the first missing result file and how to make it."""
    for what, path in files.items():
        if not Path(path).is_file():
            raise MaskfieldError(f"{what} {path} does not exist; make it with `snakemake --cores 2 {path}` from the "
                                 f"repository root (the standard result paths are workflow targets) or pass its path.")
