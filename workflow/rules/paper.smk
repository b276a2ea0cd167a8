# The paper's comparison tables as targets (config `paper:`), each a CSV and a PNG under
# results/tables/paper/, all four with `snakemake results/tables/paper/all`:
#   efficiency.csv        Table 4: both methods trained, rendered and inferred side by side on one scene
#   feature_dim.csv       Table 5: both methods at feature sizes D (per-pixel on the ideal dense features)
#   perpixel_vs_mask.csv  Table 6: both methods on every scene of the dataset (the main rows), and
#                         per-pixel fields on the SAM masks of one scale each (paper.sam_scales)
#   limited_views.csv     Table 7: the mask field (and the per-pixel field, paper.limited_views_methods)
#                         distilling 10% / 50% / 100% of the training views
# Variant runs (a D, a fraction) write under results/paper/<table>/..., never over the main
# results; a variant equal to the main settings (the mask field's own D, 100% of the views) reads
# the main result instead of training it again.

PAPER_TABLES = ("efficiency", "feature_dim", "perpixel_vs_mask", "limited_views")


wildcard_constraints:
    dim="[0-9]+",
    pct="[0-9]+",
    variant="[dv][0-9]+|sam-[sml]",
    table="feature_dim|limited_views|perpixel_vs_mask",


def paper_dataset():
    return config["paper"]["dataset"]


def paper_scene():
    """The scene of Tables 4 and 5, checked to be a scene of the paper dataset."""
    scene_config(paper_dataset(), config["paper"]["scene"])
    return config["paper"]["scene"]


def main_mask_dim(backend, dataset, scene):
    """D_m of the main mask field of a backend and scene (its resolved settings)."""
    from maskfield.backends.registry import get_backend
    from maskfield.settings import from_dict

    return from_dict(get_backend(backend).mask_settings, stage_settings("mask", backend, dataset, scene)).feature_field.dim


def percent(fraction):
    return round(100 * float(fraction))


# ---------------------------------------------------------------- variant runs


def get_mask_settings_at_dim(wildcards):
    """The main mask settings with the feature size D of the run, checked."""
    from maskfield.backends.registry import get_backend

    merged = deep_merge(stage_settings("mask", wildcards.backend, wildcards.dataset, wildcards.scene),
                        {"feature_field": {"dim": int(wildcards.dim)}})
    cls = get_backend(wildcards.backend).mask_settings
    return settings_json(checked(cls, with_seed(merged), f"fields: mask at D={wildcards.dim}"))


def get_perpixel_settings_at_dim(wildcards):
    extra = {"dim": int(wildcards.dim)}
    return settings_json(perpixel_settings(wildcards.backend, wildcards.dataset, wildcards.scene, extra))


def get_scene_flags_at_fraction(wildcards):
    """The scene flags with the reader setting distill_fraction of the run (the RGB field and the
    geometry it reads are the main ones, reconstructed from every training view)."""
    return scene_flags(wildcards.dataset, wildcards.scene, {"distill_fraction": int(wildcards.pct) / 100})


use rule mask_field as paper_mask_field_dim with:
    output:
        "results/paper/feature_dim/{dataset}/{scene}/fields/maskfield-{backend}-d{dim}.pt",
    params:
        scene=get_scene_flags,
        settings=get_mask_settings_at_dim,
    log:
        "logs/paper/feature_dim/mask_field/{dataset}/{scene}/{backend}-d{dim}.log",
    benchmark:
        "benchmarks/paper/feature_dim/mask_field/{dataset}/{scene}/{backend}-d{dim}.tsv"


use rule perpixel_field as paper_perpixel_field_dim with:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        dense="results/cache/{dataset}/{scene}/dense-ideal.h5",
        code=get_code("train-perpixel"),
    output:
        "results/paper/feature_dim/{dataset}/{scene}/fields/perpixel-{backend}-d{dim}.pt",
    params:
        scene=get_scene_flags,
        settings=get_perpixel_settings_at_dim,
    log:
        "logs/paper/feature_dim/perpixel_field/{dataset}/{scene}/{backend}-d{dim}.log",
    benchmark:
        "benchmarks/paper/feature_dim/perpixel_field/{dataset}/{scene}/{backend}-d{dim}.tsv"


use rule perpixel_field as paper_perpixel_field_scale with:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        dense="results/cache/{dataset}/{scene}/dense-sam-{scale}.h5",
        code=get_code("train-perpixel"),
    output:
        "results/paper/perpixel_vs_mask/{dataset}/{scene}/fields/perpixel-{backend}-sam-{scale}.pt",
    wildcard_constraints:
        scale="s|m|l",
    params:
        scene=get_scene_flags,
        settings=get_perpixel_settings,
    log:
        "logs/paper/perpixel_vs_mask/perpixel_field/{dataset}/{scene}/{backend}-sam-{scale}.log",
    benchmark:
        "benchmarks/paper/perpixel_vs_mask/perpixel_field/{dataset}/{scene}/{backend}-sam-{scale}.tsv"


use rule mask_field as paper_mask_field_views with:
    output:
        "results/paper/limited_views/{dataset}/{scene}/fields/maskfield-{backend}-v{pct}.pt",
    params:
        scene=get_scene_flags_at_fraction,
        settings=field_settings("mask"),
    log:
        "logs/paper/limited_views/mask_field/{dataset}/{scene}/{backend}-v{pct}.log",
    benchmark:
        "benchmarks/paper/limited_views/mask_field/{dataset}/{scene}/{backend}-v{pct}.tsv"


use rule perpixel_field as paper_perpixel_field_views with:
    output:
        "results/paper/limited_views/{dataset}/{scene}/fields/perpixel-{backend}-v{pct}.pt",
    params:
        scene=get_scene_flags_at_fraction,
        settings=get_perpixel_settings,
    log:
        "logs/paper/limited_views/perpixel_field/{dataset}/{scene}/{backend}-v{pct}.log",
    benchmark:
        "benchmarks/paper/limited_views/perpixel_field/{dataset}/{scene}/{backend}-v{pct}.tsv"


use rule render as paper_render_mask with:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        ckpt="results/paper/{table}/{dataset}/{scene}/fields/maskfield-{backend}-{variant}.pt",
        code=get_code("render"),
    output:
        "results/paper/{table}/{dataset}/{scene}/renders/maskfield-{backend}-{variant}.h5",
    log:
        "logs/paper/{table}/render/{dataset}/{scene}/{backend}-{variant}.log",
    benchmark:
        "benchmarks/paper/{table}/render/{dataset}/{scene}/{backend}-{variant}.tsv"


use rule render_perpixel as paper_render_perpixel with:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        ckpt="results/paper/{table}/{dataset}/{scene}/fields/perpixel-{backend}-{variant}.pt",
        code=get_code("render-perpixel"),
    output:
        "results/paper/{table}/{dataset}/{scene}/renders/perpixel-{backend}-{variant}.h5",
    log:
        "logs/paper/{table}/render_perpixel/{dataset}/{scene}/{backend}-{variant}.log",
    benchmark:
        "benchmarks/paper/{table}/render_perpixel/{dataset}/{scene}/{backend}-{variant}.tsv"


use rule evaluate as paper_evaluate with:
    input:
        scene=get_scene_input,
        renders="results/paper/{table}/{dataset}/{scene}/renders/{method}.h5",
        text="results/cache/{dataset}/{scene}/text.h5",
        code=get_code("evaluate"),
    output:
        "results/paper/{table}/{dataset}/{scene}/metrics/{method}.csv",
    log:
        "logs/paper/{table}/evaluate/{dataset}/{scene}/{method}.log",
    benchmark:
        "benchmarks/paper/{table}/evaluate/{dataset}/{scene}/{method}.tsv"


# ---------------------------------------------------------------- Table 4


rule paper_efficiency:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        masks="results/cache/{dataset}/{scene}/masks.h5",
        embeddings="results/cache/{dataset}/{scene}/embeddings.h5",
        dense=get_main_dense,
        text="results/cache/{dataset}/{scene}/text.h5",
        code=get_code("efficiency"),
    output:
        "results/paper/efficiency/{dataset}/{scene}/{backend}.csv",
    params:
        scene=get_scene_flags,
        mask=field_settings("mask"),
        perpixel=get_perpixel_settings,
        inference=get_inference_settings,
    log:
        "logs/paper/efficiency/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/paper/efficiency/{dataset}/{scene}/{backend}.tsv"
    # more threads than a workstation's job needs: Snakemake caps them at --cores, so nothing else
    # runs beside the measurement (a literal, since a cluster run has no total core count)
    threads: 64
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} efficiency {params.scene} --backend {wildcards.backend} "
        "--geometry {input.geometry} --masks {input.masks} --embeddings {input.embeddings} --dense {input.dense} "
        "--text {input.text} --mask-settings {params.mask} --perpixel-settings {params.perpixel} "
        "--inference {params.inference} --out {output} > {log} 2>&1"


# ---------------------------------------------------------------- the tables


def feature_dim_runs():
    """(metrics file, D) of Table 5: both methods at every D, for every backend."""
    ds, scene = paper_dataset(), paper_scene()
    runs = []
    for backend in config["backends"]:
        for dim in config["paper"]["feature_dims"]:
            mask = f"results/paper/feature_dim/{ds}/{scene}/metrics/maskfield-{backend}-d{dim}.csv"
            if dim == main_mask_dim(backend, ds, scene):
                mask = f"results/metrics/{ds}/{scene}/maskfield-{backend}.csv"
            runs += [(mask, dim), (f"results/paper/feature_dim/{ds}/{scene}/metrics/perpixel-{backend}-d{dim}.csv", dim)]
    return runs


def limited_views_runs():
    """(metrics file, fraction) of Table 7: each method of paper.limited_views_methods, for every
    backend and scene, per fraction (100% reads the main result)."""
    ds = paper_dataset()
    runs = []
    for method in config["paper"]["limited_views_methods"]:
        for backend in config["backends"]:
            for scene in scenes_of(ds):
                for fraction in config["paper"]["distill_fractions"]:
                    path = f"results/paper/limited_views/{ds}/{scene}/metrics/{method}-{backend}-v{percent(fraction)}.csv"
                    if percent(fraction) == 100:
                        path = f"results/metrics/{ds}/{scene}/{method}-{backend}.csv"
                    runs.append((path, fraction))
    return runs


def get_feature_dim_metrics(wildcards):
    return [path for path, _ in feature_dim_runs()]


def get_feature_dim_variants(wildcards):
    return " ".join(str(dim) for _, dim in feature_dim_runs())


def get_limited_views_metrics(wildcards):
    return [path for path, _ in limited_views_runs()]


def get_limited_views_variants(wildcards):
    return " ".join(str(fraction) for _, fraction in limited_views_runs())


def get_perpixel_vs_mask_metrics(wildcards):
    """Table 6: the main rows of both methods, and the per-pixel fields on each SAM scale."""
    ds = paper_dataset()
    main = [f"results/metrics/{ds}/{scene}/{method}-{backend}.csv"
            for scene in scenes_of(ds) for method in ("maskfield", "perpixel") for backend in config["backends"]]
    return main + [f"results/paper/perpixel_vs_mask/{ds}/{scene}/metrics/perpixel-{backend}-sam-{scale}.csv"
                   for scene in scenes_of(ds) for backend in config["backends"] for scale in config["paper"]["sam_scales"]]


def get_efficiency_rows(wildcards):
    return [f"results/paper/efficiency/{paper_dataset()}/{paper_scene()}/{backend}.csv" for backend in config["backends"]]


rule paper_feature_dim:
    input:
        metrics=get_feature_dim_metrics,
        code=get_code("paper-table"),
    output:
        csv="results/tables/paper/feature_dim.csv",
        png="results/tables/paper/feature_dim.png",
    params:
        table="feature_dim",
        variants=get_feature_dim_variants,
    log:
        "logs/paper/tables/feature_dim.log",
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield paper-table --table {params.table} --metrics {input.metrics} --variants {params.variants} "
        "--out {output.csv} --figure {output.png} > {log} 2>&1"


use rule paper_feature_dim as paper_limited_views with:
    input:
        metrics=get_limited_views_metrics,
        code=get_code("paper-table"),
    output:
        csv="results/tables/paper/limited_views.csv",
        png="results/tables/paper/limited_views.png",
    params:
        table="limited_views",
        variants=get_limited_views_variants,
    log:
        "logs/paper/tables/limited_views.log",


rule paper_perpixel_vs_mask:
    input:
        metrics=get_perpixel_vs_mask_metrics,
        code=get_code("paper-table"),
    output:
        csv="results/tables/paper/perpixel_vs_mask.csv",
        png="results/tables/paper/perpixel_vs_mask.png",
    params:
        table="perpixel_vs_mask",
    log:
        "logs/paper/tables/perpixel_vs_mask.log",
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield paper-table --table {params.table} --metrics {input.metrics} "
        "--out {output.csv} --figure {output.png} > {log} 2>&1"


use rule paper_perpixel_vs_mask as paper_efficiency_table with:
    input:
        metrics=get_efficiency_rows,
        code=get_code("paper-table"),
    output:
        csv="results/tables/paper/efficiency.csv",
        png="results/tables/paper/efficiency.png",
    params:
        table="efficiency",
    log:
        "logs/paper/tables/efficiency.log",


rule paper_all:
    input:
        expand("results/tables/paper/{table}.{ext}", table=PAPER_TABLES, ext=("csv", "png")),
    output:
        "results/tables/paper/all",
    localrule: True
    shell:
        "printf '%s\\n' {input} > {output}"
