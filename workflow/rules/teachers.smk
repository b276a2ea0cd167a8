# Stages 1-2: the teacher caches. Changing a CLIP setting reruns the embeddings, never the masks.



rule sam_masks:
    input:
        scene=get_scene_input,
        code=get_masks_code,
    output:
        "results/cache/{dataset}/{scene}/masks.h5",
    params:
        scene=get_scene_flags,
        source=get_masks_source,
        settings=get_masks_settings,
    log:
        "logs/sam_masks/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/sam_masks/{dataset}/{scene}.tsv"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield masks {params.scene} --source {params.source} --settings {params.settings} "
        "--out {output} > {log} 2>&1"


rule clip_embeddings:
    input:
        scene=get_scene_input,
        masks="results/cache/{dataset}/{scene}/masks.h5",
        code=get_embed_code,
    output:
        "results/cache/{dataset}/{scene}/embeddings.h5",
    params:
        scene=get_scene_flags,
        source=get_embed_source,
        settings=get_embed_settings,
    log:
        "logs/clip_embeddings/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/clip_embeddings/{dataset}/{scene}.tsv"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield embed {params.scene} --masks {input.masks} --source {params.source} "
        "--settings {params.settings} --out {output} > {log} 2>&1"
