# Stages 1-2: the teacher caches. Changing a CLIP setting reruns the embeddings, never the masks.


rule sam_masks:
    input:
        scene=get_scene_input,
        weights=get_teacher_weights("sam"),
        code=get_code("masks"),
    output:
        "results/cache/{dataset}/{scene}/masks.h5",
    params:
        scene=get_scene_flags,
        source=get_masks_source,
        settings=get_masks_settings,
    priority: 10
    log:
        "logs/sam_masks/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/sam_masks/{dataset}/{scene}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} masks {params.scene} --source {params.source} --settings {params.settings} "
        "--out {output} > {log} 2>&1"


rule clip_embeddings:
    input:
        scene=get_scene_input,
        masks="results/cache/{dataset}/{scene}/masks.h5",
        weights=get_teacher_weights("clip"),
        code=get_code("embed"),
    output:
        "results/cache/{dataset}/{scene}/embeddings.h5",
    params:
        scene=get_scene_flags,
        source=get_embed_source,
        settings=get_embed_settings,
    priority: 10
    log:
        "logs/clip_embeddings/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/clip_embeddings/{dataset}/{scene}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} embed {params.scene} --masks {input.masks} --source {params.source} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


# The scene's prompts through the text tower of its embeddings, once: evaluation reads this file
# instead of loading CLIP in every job.
rule text_embeddings:
    input:
        scene=get_scene_input,
        embeddings="results/cache/{dataset}/{scene}/embeddings.h5",
        code=get_code("encode-text"),
    output:
        "results/cache/{dataset}/{scene}/text.h5",
    params:
        scene=get_scene_flags,
    log:
        "logs/text_embeddings/{dataset}/{scene}.log",
    resources:
        mem_mb=8000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield encode-text {params.scene} --embeddings {input.embeddings} --out {output} > {log} 2>&1"
