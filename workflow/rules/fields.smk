# Stages 3-4 for each backend ({backend}: config `backends:`): RGB field, frozen geometry, mask field.


rule rgb_field:
    input:
        unpack(get_from_rgb),
        scene=get_scene_input,
        code=get_code("train-rgb"),
    output:
        ckpt="results/fields/{dataset}/{scene}/rgb-{backend}.pt",
        summary="results/fields/{dataset}/{scene}/rgb-{backend}.json",
    params:
        scene=get_scene_flags,
        settings=field_settings("rgb"),
        from_rgb=get_from_rgb_flags,
    priority: 20
    log:
        "logs/rgb_field/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/rgb_field/{dataset}/{scene}/{backend}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} train-rgb {params.scene} --backend {wildcards.backend} {params.from_rgb} "
        "--settings {params.settings} --out {output.ckpt} > {log} 2>&1"


rule geometry:
    input:
        scene=get_scene_input,
        rgb="results/fields/{dataset}/{scene}/rgb-{backend}.pt",
        code=get_code("geometry"),
    output:
        "results/fields/{dataset}/{scene}/geometry-{backend}.h5",
    params:
        scene=get_scene_flags,
        settings=field_settings("geometry", seeded=False),
    priority: 10
    log:
        "logs/geometry/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/geometry/{dataset}/{scene}/{backend}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=30,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} geometry {params.scene} --backend {wildcards.backend} --rgb {input.rgb} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


rule mask_field:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        masks="results/cache/{dataset}/{scene}/masks.h5",
        embeddings="results/cache/{dataset}/{scene}/embeddings.h5",
        code=get_code("train-mask"),
    output:
        "results/fields/{dataset}/{scene}/maskfield-{backend}.pt",
    params:
        scene=get_scene_flags,
        settings=field_settings("mask"),
    priority: 5
    log:
        "logs/mask_field/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/mask_field/{dataset}/{scene}/{backend}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} train-mask {params.scene} --geometry {input.geometry} --masks {input.masks} "
        "--embeddings {input.embeddings} --backend {wildcards.backend} --method maskfield "
        "--settings {params.settings} --out {output} > {log} 2>&1"
