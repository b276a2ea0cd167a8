# Stages 3-4: RGB field, frozen geometry cache, mask field.


rule rgb_field:
    input:
        scene=get_scene_input,
        code=code("fields/nerf.py", "fields/encodings.py", "fields/train_rgb.py", "stages/rgb.py"),
    output:
        ckpt="results/fields/{dataset}/{scene}/rgb-nerf.pt",
        summary="results/fields/{dataset}/{scene}/rgb-nerf.json",
    params:
        scene=get_scene_flags,
        settings=field_settings("rgb"),
    log:
        "logs/rgb_field/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/rgb_field/{dataset}/{scene}.tsv"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield train-rgb {params.scene} --backend nerf --settings {params.settings} "
        "--out {output.ckpt} > {log} 2>&1"


rule geometry:
    input:
        scene=get_scene_input,
        rgb="results/fields/{dataset}/{scene}/rgb-nerf.pt",
        code=code("fields/geometry_cache.py", "stages/rgb.py"),
    output:
        "results/fields/{dataset}/{scene}/geometry-nerf.h5",
    params:
        scene=get_scene_flags,
        settings=field_settings("geometry", seeded=False),
    log:
        "logs/geometry/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/geometry/{dataset}/{scene}.tsv"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=30,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield geometry {params.scene} --rgb {input.rgb} --settings {params.settings} "
        "--out {output} > {log} 2>&1"


rule mask_field:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-nerf.h5",
        masks="results/cache/{dataset}/{scene}/masks.h5",
        embeddings="results/cache/{dataset}/{scene}/embeddings.h5",
        code=code(
            "fields/feature_field.py",
            "distill/mask_field.py",
            "distill/matching.py",
            "distill/losses.py",
            "distill/train.py",
            "stages/mask.py",
        ),
    output:
        "results/fields/{dataset}/{scene}/maskfield-nerf.pt",
    params:
        scene=get_scene_flags,
        settings=field_settings("mask"),
    log:
        "logs/mask_field/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/mask_field/{dataset}/{scene}.tsv"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield train-mask {params.scene} --geometry {input.geometry} --masks {input.masks} "
        "--embeddings {input.embeddings} --backend nerf --method maskfield "
        "--settings {params.settings} --out {output} > {log} 2>&1"
