# Config validation and input functions, named for what they return (no lambdas in rules).
import json
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def coerce_cli_scalars(node):
    """Numbers and booleans typed in nested `--config` values arrive as strings (Snakemake parses
    nested values with YAML's BaseLoader); turn them back so the schema and stages see numbers."""
    if isinstance(node, dict):
        return {k: coerce_cli_scalars(v) for k, v in node.items()}
    if isinstance(node, list):
        return [coerce_cli_scalars(v) for v in node]
    if isinstance(node, str):
        if node.lower() in ("true", "false"):
            return node.lower() == "true"
        for parse in (int, float):
            try:
                return parse(node)
            except ValueError:
                pass
    return node


config.update(coerce_cli_scalars(dict(config)))
validate(config, schema="../schemas/config.schema.yaml")

# Stage modules are listed as inputs of their rules because Snakemake does not track imported code,
# so this is what makes a code change rerun exactly the stage it touches.
PKG = Path(workflow.basedir).parent / "maskfield"


def code(*modules):
    return [str(PKG / m) for m in modules]


def dataset_config(dataset):
    if dataset not in config["datasets"]:
        raise WorkflowError(
            f"Dataset '{dataset}' is not in config['datasets'] (known: {sorted(config['datasets'])})."
        )
    return config["datasets"][dataset]


def scene_config(dataset, scene):
    ds = dataset_config(dataset)
    if scene not in ds["scenes"]:
        raise WorkflowError(
            f"Scene '{scene}' is not listed under config['datasets']['{dataset}']['scenes'] (known: {sorted(ds['scenes'])})."
        )
    return ds["scenes"][scene]


def scene_dir(dataset, scene):
    return str(Path(dataset_config(dataset)["root"]) / scene)


def get_scene_input(wildcards):
    """The scene folder: a rule output for synthetic datasets, a checked path for real ones."""
    ds = dataset_config(wildcards.dataset)
    path = scene_dir(wildcards.dataset, wildcards.scene)
    if ds.get("synthesize", False):
        return path
    if not Path(path).is_dir():
        raise WorkflowError(
            f"Scene folder {path} does not exist: download the '{wildcards.dataset}' dataset (README, "
            f"section 'Real data') and place it there, or set config['datasets']['{wildcards.dataset}']['root']."
        )
    return []  # read in place; not tracked as a file input (real datasets do not change)


def get_reader_settings(dataset, scene):
    merged = dict(dataset_config(dataset).get("reader", {}))
    merged.update(scene_config(dataset, scene).get("reader", {}))
    return merged


def get_scene_flags(wildcards):
    """The `--layout --scene-dir --dataset --reader-settings` flags of every scene-reading command."""
    sc = scene_config(wildcards.dataset, wildcards.scene)
    reader = json.dumps(get_reader_settings(wildcards.dataset, wildcards.scene), sort_keys=True)
    return (
        f"--layout {sc['layout']} --scene-dir {shlex.quote(scene_dir(wildcards.dataset, wildcards.scene))} "
        f"--dataset {wildcards.dataset} --reader-settings {shlex.quote(reader)}"
    )


def settings_json(section):
    """A config section as the quoted JSON a stage takes with --settings (deterministic text)."""
    return shlex.quote(json.dumps(section, sort_keys=True))


def deep_merge(base, override):
    """`override` on top of `base`, nested dicts merged key by key (the rest replaced)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def field_settings(stage, seeded=True):
    """Params function of a field rule: `fields: <stage>` with the dataset's, then the scene's
    `fields: <stage>` overrides on top (e.g. depth supervision only where the reader has depth)."""

    def settings(wildcards):
        merged = config["fields"][stage]
        for level in (dataset_config(wildcards.dataset), scene_config(wildcards.dataset, wildcards.scene)):
            merged = deep_merge(merged, level.get("fields", {}).get(stage, {}))
        return settings_json(with_seed(merged) if seeded else merged)

    return settings


def with_seed(section):
    merged = {"seed": config["seed"]}
    merged.update(section)
    return merged


def teacher_kind(dataset):
    return dataset_config(dataset).get("teacher", "real")


def get_masks_source(wildcards):
    return "simulated" if teacher_kind(wildcards.dataset) == "simulated" else "sam"


def get_masks_settings(wildcards):
    key = "simulated_masks" if teacher_kind(wildcards.dataset) == "simulated" else "sam"
    return settings_json(with_seed(config["teachers"][key]))


def get_embed_source(wildcards):
    return "simulated" if teacher_kind(wildcards.dataset) == "simulated" else "clip"


def get_embed_settings(wildcards):
    key = "simulated_embeddings" if teacher_kind(wildcards.dataset) == "simulated" else "clip"
    return settings_json(with_seed(config["teachers"][key]))


def scenes_of(dataset):
    """The scenes that make up a dataset's table (those not switched off with `enabled: false`)."""
    return [name for name, sc in dataset_config(dataset)["scenes"].items() if sc.get("enabled", True)]


def get_table_metrics(wildcards):
    return [
        f"results/metrics/{wildcards.dataset}/{scene}/{method}.csv"
        for scene in scenes_of(wildcards.dataset)
        for method in config["methods"]
    ]


def get_synthetic_layout(wildcards):
    return scene_config("synthetic", wildcards.scene)["layout"]


def get_synthesize_settings(wildcards):
    layout = get_synthetic_layout(wildcards)
    return settings_json(with_seed(config["synthetic"].get(layout, {})))


def get_masks_code(wildcards):
    if get_masks_source(wildcards) == "simulated":
        return code("teachers/simulated.py", "stages/teachers.py")
    return code("teachers/sam.py", "teachers/mask_nms.py", "stages/teachers.py")


def get_embed_code(wildcards):
    if get_embed_source(wildcards) == "simulated":
        return code("teachers/simulated.py", "teachers/text.py", "stages/teachers.py")
    return code("teachers/clip.py", "teachers/text.py", "stages/teachers.py")
