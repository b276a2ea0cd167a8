# The per-pixel distillation baseline (method `perpixel`, rows perpixel-<backend>): the dense teacher
# features, a D-dim feature field per backend trained on them, and its dense renders, which the
# `evaluate` rule scores like any other method's.


DENSE_SOURCES = ("clip", "simulated", "ideal")


def main_dense_source(dataset):
    """The dense teacher of a dataset's main rows: CLIP's tokens, or their simulated counterpart."""
    return "simulated" if teacher_kind(dataset) == "simulated" else "clip"


def dense_settings(wildcards):
    """`maskfield dense --settings` of a source: clip reads teachers: clip; simulated and ideal the
    simulated CLIP's teachers: simulated_embeddings (one text space and noise), simulated adds
    teachers: simulated_dense (its patch grid). Dataset and scene overrides apply."""
    from maskfield.teachers.dense import SimulatedDenseSettings
    from maskfield.teachers.simulated import SimulatedEmbedSettings

    if wildcards.source == "clip":
        return teacher_settings(wildcards, "clip")
    teachers = overrides(wildcards.dataset, wildcards.scene, "teachers")
    merged = with_seed(teachers.get("simulated_embeddings", {}))
    if wildcards.source == "simulated":
        merged = {**merged, **teachers.get("simulated_dense", {})}
    cls = SimulatedDenseSettings if wildcards.source == "simulated" else SimulatedEmbedSettings
    return checked(cls, merged, f"the {wildcards.source} dense teacher of {wildcards.dataset}/{wildcards.scene}")


def get_dense_settings(wildcards):
    return settings_json(dense_settings(wildcards))


def get_dense_weights(wildcards):
    """Input function: the CLIP (and FeatUp) weights of the clip source, so a dry run names a missing file."""
    return get_teacher_weights("clip")(wildcards) if wildcards.source == "clip" else []


def get_dense_gpus(wildcards):
    return 1 if wildcards.source == "clip" else 0


def get_main_dense(wildcards):
    return f"results/cache/{wildcards.dataset}/{wildcards.scene}/dense-{main_dense_source(wildcards.dataset)}.h5"


def perpixel_settings(backend, dataset, scene, extra=None):
    """The merged, checked `maskfield train-perpixel` settings of one backend and scene: for each
    level (global, dataset, scene) `fields: perpixel:` then `fields: <backend>: perpixel:`; the
    feature network is the mask field's (its `feature_field` section, dim aside) under the
    per-pixel one, and the step count is matched to the mask field's train schedule. `extra`
    (a variant's settings) goes on top."""
    from maskfield.backends.registry import get_backend
    from maskfield.distill.perpixel import PerPixelSettings
    from maskfield.settings import from_dict

    merged = {}
    for level in (config, dataset_config(dataset), scene_config(dataset, scene)):
        fields = level.get("fields", {})
        merged = deep_merge(merged, fields.get("perpixel", {}))
        merged = deep_merge(merged, fields.get(backend, {}).get("perpixel", {}))
    merged = deep_merge(merged, extra or {})
    mask = stage_settings("mask", backend, dataset, scene)
    where = f"fields: {backend}: mask of {dataset}/{scene}"
    train = from_dict(get_backend(backend).mask_settings, checked(get_backend(backend).mask_settings, mask, where)).train
    network = {k: v for k, v in mask.get("feature_field", {}).items() if k != "dim"}
    merged["feature_field"] = deep_merge(network, merged.get("feature_field", {}))
    merged["train"] = {"mask_iterations": train.iterations, "mask_stride": train.stride, **merged.get("train", {})}
    return checked(PerPixelSettings, with_seed(merged), f"fields: perpixel of {backend} on {dataset}/{scene}")


def get_perpixel_settings(wildcards):
    return settings_json(perpixel_settings(wildcards.backend, wildcards.dataset, wildcards.scene))


rule dense_teacher:
    input:
        scene=get_scene_input,
        weights=get_dense_weights,
        code=get_code("dense"),
    output:
        "results/cache/{dataset}/{scene}/dense-{source}.h5",
    wildcard_constraints:
        source="|".join(DENSE_SOURCES),
    params:
        scene=get_scene_flags,
        settings=get_dense_settings,
    log:
        "logs/dense_teacher/{dataset}/{scene}/{source}.log",
    benchmark:
        "benchmarks/dense_teacher/{dataset}/{scene}/{source}.tsv"
    threads: 4
    resources:
        gpu=get_dense_gpus,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} dense {params.scene} --source {wildcards.source} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


rule dense_mask_scale:
    # LangSplat's per-pixel features: the mask teacher's masks of one SAM scale (s, m, l), each
    # pixel carrying its smallest mask's CLIP embedding (the paper's "Per-pixel (SAM s/m/l)")
    input:
        scene=get_scene_input,
        masks="results/cache/{dataset}/{scene}/masks.h5",
        embeddings="results/cache/{dataset}/{scene}/embeddings.h5",
        code=get_code("dense"),
    output:
        "results/cache/{dataset}/{scene}/dense-sam-{scale}.h5",
    wildcard_constraints:
        scale="s|m|l",
    params:
        scene=get_scene_flags,
    log:
        "logs/dense_teacher/{dataset}/{scene}/sam-{scale}.log",
    benchmark:
        "benchmarks/dense_teacher/{dataset}/{scene}/sam-{scale}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield dense {params.scene} --source sam-{wildcards.scale} --masks {input.masks} "
        "--embeddings {input.embeddings} --out {output} > {log} 2>&1"


rule perpixel_field:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        dense=get_main_dense,
        code=get_code("train-perpixel"),
    output:
        "results/fields/{dataset}/{scene}/perpixel-{backend}.pt",
    params:
        scene=get_scene_flags,
        settings=get_perpixel_settings,
    log:
        "logs/perpixel_field/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/perpixel_field/{dataset}/{scene}/{backend}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} train-perpixel {params.scene} --geometry {input.geometry} "
        "--dense {input.dense} --backend {wildcards.backend} --settings {params.settings} --out {output} > {log} 2>&1"


rule render_perpixel:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        ckpt="results/fields/{dataset}/{scene}/perpixel-{backend}.pt",
        code=get_code("render-perpixel"),
    output:
        "results/renders/{dataset}/{scene}/perpixel-{backend}.h5",
    params:
        scene=get_scene_flags,
    log:
        "logs/render_perpixel/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/render_perpixel/{dataset}/{scene}/{backend}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=30,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} render-perpixel {params.scene} --geometry {input.geometry} "
        "--checkpoint {input.ckpt} --out {output} > {log} 2>&1"
