# Config validation, settings resolution and input functions, named for what they return (no
# lambdas in rules). Every stage setting is checked against its dataclass here, while the DAG is
# built, so a typo fails before any job starts (and before Snakemake removes any old output).
import ast
import functools
import json
import os
import shlex
import sys
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

SRC = Path(workflow.basedir).parent  # the folder holding the `maskfield` package
sys.path.insert(0, str(SRC))  # settings are checked against the package beside this workflow
# The rules run the `maskfield` command installed beside this Snakemake (e.g. .venv/bin), also
# when the environment was not activated; jobs inherit the PATH (Slurm: --export=ALL).
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

from maskfield.backends.registry import BACKENDS  # noqa: E402 (after validation: names for wildcards)


# ---------------------------------------------------------------- code inputs


def _module_file(modname):
    """The source file of a `maskfield` module or package (None when it does not exist)."""
    base = SRC.joinpath(*modname.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@functools.lru_cache(maxsize=None)
def _imports_of(modname):
    """The `maskfield` modules that `modname` imports anywhere in its source (function-level
    imports included: a lazy import still runs when the stage calls that function)."""
    path = _module_file(modname)
    package = modname if path.name == "__init__.py" else modname.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "maskfield" and _module_file(n))
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def code_inputs(*roots):
    """Source files of `roots` and of every `maskfield` module they import, transitively, with
    the packages' __init__ files on the way (Python runs those on import). Snakemake does not
    track imported code, so these files are the rule's inputs: editing one reruns exactly the
    rules whose stage imports it, directly or through other modules."""
    seen, todo = set(), list(roots)
    while todo:
        modname = todo.pop()
        parts = modname.split(".")
        for i in range(1, len(parts) + 1):  # the module and its parent packages
            name = ".".join(parts[:i])
            if name not in seen and _module_file(name):
                seen.add(name)
                todo.extend(_imports_of(name))
    return sorted(str(_module_file(m)) for m in seen)


def command_code(command, backend=None):
    """Code inputs of a rule that runs `maskfield <command>` (and dispatches to `backend`: its
    package and the modules of the parts that command uses, maskfield.backends.registry)."""
    from maskfield.backends.registry import command_modules
    from maskfield.cli import COMMANDS

    roots = ["maskfield.cli", COMMANDS[command].split(":")[0]]
    if backend is not None:
        roots += command_modules(backend, command)
    return code_inputs(*roots)


def get_code(command):
    """Input function: the code inputs of `maskfield <command>`, for the job's backend if any."""

    def code(wildcards):
        return command_code(command, wildcards.get("backend"))

    return code


# ---------------------------------------------------------------- datasets and scenes


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


def check_synthesize_keys():
    """A scene's `synthesize:` settings only mean something in a synthesized dataset: refuse them
    elsewhere rather than ignore them."""
    for dataset, ds in config["datasets"].items():
        if ds.get("synthesize", False):
            continue
        for scene, sc in ds["scenes"].items():
            if "synthesize" in sc:
                raise WorkflowError(
                    f"Scene {dataset}/{scene} has `synthesize:` settings but dataset {dataset} is read from disk "
                    f"(its `synthesize` is false); remove them, or set datasets: {dataset}: synthesize: true.")


check_synthesize_keys()


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
    from maskfield.data.loader import READERS

    layout = scene_config(dataset, scene)["layout"]
    return checked(READERS[layout][0], merged, f"the reader settings of {dataset}/{scene}")


def scene_flags(dataset, scene, reader_extra=None):
    """The `--layout --scene-dir --dataset --reader-settings` flags of a scene; `reader_extra` (a
    variant run's reader settings, e.g. distill_fraction) goes on top of the configured ones."""
    sc = scene_config(dataset, scene)
    settings = {**get_reader_settings(dataset, scene), **(reader_extra or {})}
    from maskfield.data.loader import READERS

    reader = json.dumps(checked(READERS[sc["layout"]][0], settings, f"the reader settings of {dataset}/{scene}"), sort_keys=True)
    return (
        f"--layout {sc['layout']} --scene-dir {shlex.quote(scene_dir(dataset, scene))} "
        f"--dataset {dataset} --reader-settings {shlex.quote(reader)}"
    )


def get_scene_flags(wildcards):
    """The `--layout --scene-dir --dataset --reader-settings` flags of every scene-reading command."""
    return scene_flags(wildcards.dataset, wildcards.scene)


def scene_protocol(dataset, scene):
    """The evaluation protocol of a scene, from its layout's reader (maskfield.data.loader)."""
    from maskfield.data.loader import READERS

    return READERS[scene_config(dataset, scene)["layout"]][2]


def scenes_of(dataset):
    """The scenes that make up a dataset's table (those not switched off with `enabled: false`)."""
    return [name for name, sc in dataset_config(dataset)["scenes"].items() if sc.get("enabled", True)]


# ---------------------------------------------------------------- settings


def checked(cls, data, where):
    """`data` after checking it against the settings dataclass `cls` (unknown keys, bad values):
    a WorkflowError at DAG-build time instead of a failed job."""
    from maskfield.errors import MaskfieldError
    from maskfield.settings import from_dict

    try:
        from_dict(cls, data, where=f"config ({where})")
    except MaskfieldError as exc:
        raise WorkflowError(str(exc)) from None
    return data


def settings_json(section):
    """A settings dict as the quoted JSON a stage takes with --settings (deterministic text)."""
    return shlex.quote(json.dumps(section, sort_keys=True))


def deep_merge(base, override):
    """`override` on top of `base`, nested dicts merged key by key (the rest replaced)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_seed(section):
    return {"seed": config["seed"], **section}


def overrides(dataset, scene, key):
    """config[key], then the dataset's and the scene's `key:` sections on top (nested merge)."""
    merged = config.get(key, {})
    for level in (dataset_config(dataset), scene_config(dataset, scene)):
        merged = deep_merge(merged, level.get(key, {}))
    return merged


def stage_settings(stage, backend, dataset, scene):
    """The merged settings of a field stage ("rgb", "geometry", "mask") of one backend and scene:
    for each level (global, dataset, scene) `fields: mask:` (mask only) then `fields: <backend>:
    <stage>:`, each on top of the previous one."""
    merged = {}
    for level in (config, dataset_config(dataset), scene_config(dataset, scene)):
        fields = level.get("fields", {})
        if stage == "mask":
            merged = deep_merge(merged, fields.get("mask", {}))
        merged = deep_merge(merged, fields.get(backend, {}).get(stage, {}))
    return merged


STAGE_CLASSES = {"rgb": "rgb_settings", "geometry": "geometry_settings", "mask": "mask_settings"}


def checked_stage_settings(stage, wildcards, seeded=True):
    """The merged settings of a field stage for a job, seeded, checked against the backend's class."""
    from maskfield.backends.registry import get_backend

    merged = stage_settings(stage, wildcards.backend, wildcards.dataset, wildcards.scene)
    merged = with_seed(merged) if seeded else merged
    cls = getattr(get_backend(wildcards.backend), STAGE_CLASSES[stage])
    return checked(cls, merged, f"fields: {wildcards.backend}: {stage} of {wildcards.dataset}/{wildcards.scene}")


def field_settings(stage, seeded=True):
    """Params function of a field rule: the stage's merged settings, checked, as --settings JSON."""

    def settings(wildcards):
        return settings_json(checked_stage_settings(stage, wildcards, seeded))

    return settings


def get_from_rgb(wildcards):
    """Input function: other backends' RGB checkpoints this backend's RGB field starts from."""
    from maskfield.backends.registry import get_backend
    from maskfield.settings import from_dict

    be = get_backend(wildcards.backend)
    layout = scene_config(wildcards.dataset, wildcards.scene)["layout"]
    needs = be.rgb_needs(layout, from_dict(be.rgb_settings, checked_stage_settings("rgb", wildcards)))
    return {name: f"results/fields/{wildcards.dataset}/{wildcards.scene}/rgb-{name}.pt" for name in needs}


def get_from_rgb_flags(wildcards):
    return " ".join(f"--from-rgb {name}={shlex.quote(path)}" for name, path in get_from_rgb(wildcards).items())


def teacher_kind(dataset):
    return dataset_config(dataset).get("teacher", "real")


def teacher_settings(wildcards, key):
    """`teachers: <key>:` with the dataset's and scene's `teachers:` overrides, seeded and checked."""
    from maskfield.stages.teachers import EMBED_SOURCES, MASK_SOURCES

    sources = {"sam": MASK_SOURCES["sam"], "simulated_masks": MASK_SOURCES["simulated"],
               "clip": EMBED_SOURCES["clip"], "simulated_embeddings": EMBED_SOURCES["simulated"]}
    merged = with_seed(overrides(wildcards.dataset, wildcards.scene, "teachers").get(key, {}))
    return checked(sources[key][0], merged, f"teachers: {key} of {wildcards.dataset}/{wildcards.scene}")


def get_masks_source(wildcards):
    return "simulated" if teacher_kind(wildcards.dataset) == "simulated" else "sam"


def get_masks_settings(wildcards):
    key = "simulated_masks" if teacher_kind(wildcards.dataset) == "simulated" else "sam"
    return settings_json(teacher_settings(wildcards, key))


def get_embed_source(wildcards):
    return "simulated" if teacher_kind(wildcards.dataset) == "simulated" else "clip"


def get_embed_settings(wildcards):
    key = "simulated_embeddings" if teacher_kind(wildcards.dataset) == "simulated" else "clip"
    return settings_json(teacher_settings(wildcards, key))


WEIGHTS_HELP = {
    "checkpoint": "the segment-anything release (github.com/facebookresearch/segment-anything, Model Checkpoints)",
    "featup_checkpoint": "FeatUp's release (github.com/mhamilton723/FeatUp)",
}


def get_teacher_weights(kind):
    """Input function: the real teacher's weight files, so that a dry run already names a missing
    one (the simulated teacher needs none)."""

    def weights(wildcards):
        if teacher_kind(wildcards.dataset) == "simulated":
            return []
        from maskfield.settings import from_dict
        from maskfield.stages.teachers import EMBED_SOURCES, MASK_SOURCES

        cls = MASK_SOURCES["sam"][0] if kind == "sam" else EMBED_SOURCES["clip"][0]
        s = from_dict(cls, teacher_settings(wildcards, kind))
        files = {"checkpoint": s.checkpoint}
        if getattr(s, "featup_checkpoint", ""):
            files["featup_checkpoint"] = s.featup_checkpoint
        for key, path in files.items():
            if not Path(path).is_file():
                where = WEIGHTS_HELP[key] if kind == "sam" or key != "checkpoint" else (
                    "open_clip's OpenAI ViT-B/16 weights saved as a local file (README, section 'Real data')")
                raise WorkflowError(f"The {kind} weights {path} (config teachers: {kind}: {key}) do not exist; "
                                    f"download them from {where} and place them there or change that key.")
        return list(files.values())

    return weights


def get_inference_settings(wildcards):
    """The part of `inference:` that the scene's protocol reads (a setting of another protocol
    does not rerun this evaluation), checked."""
    from maskfield.evaluate.protocols import InferenceSettings, get_protocol

    used = get_protocol(scene_protocol(wildcards.dataset, wildcards.scene)).settings_for(config["inference"])
    return settings_json(checked(InferenceSettings, used, "inference"))


def get_segmentation_settings(wildcards):
    from maskfield.evaluate.protocols import InferenceSettings

    used = {"segmentation": config["inference"]["segmentation"]}
    return settings_json(checked(InferenceSettings, used, "inference"))


def get_synthetic_layout(wildcards):
    return scene_config("synthetic", wildcards.scene)["layout"]


def get_synthesize_settings(wildcards):
    """`synthetic: <layout>:` with the scene's own `synthesize:` settings on top, seeded and checked."""
    from maskfield.stages.synthesize import SynthesizeSettings

    layout = get_synthetic_layout(wildcards)
    merged = deep_merge(config["synthetic"].get(layout, {}), scene_config("synthetic", wildcards.scene).get("synthesize", {}))
    where = f"synthetic: {layout} and the synthesize settings of scene {wildcards.scene}"
    return settings_json(checked(SynthesizeSettings, with_seed(merged), where))


# ---------------------------------------------------------------- methods and tables


def table_methods():
    """The table's method rows: each 3D method crossed with the backends, then the 2D ones."""
    out = []
    for method in config["methods"]:
        out += [f"{method}-{b}" for b in config["backends"]] if method != "teacher-2d" else [method]
    return out


def get_table_figures(wildcards):
    """The contact sheets of every scene and method of a dataset's table (rule `contact_sheet`)."""
    return [
        f"results/figures/{wildcards.dataset}/{scene}/{method}.png"
        for scene in scenes_of(wildcards.dataset)
        for method in table_methods()
    ]


def get_table_metrics(wildcards):
    return [
        f"results/metrics/{wildcards.dataset}/{scene}/{method}.csv"
        for scene in scenes_of(wildcards.dataset)
        for method in table_methods()
    ]
