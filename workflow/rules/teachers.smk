# Stages 1-2: the teacher caches. Changing a CLIP setting reruns the embeddings, never the masks.


def get_masks_code(wildcards):
    if get_masks_source(wildcards) == "simulated":
        return code("teachers/simulated.py", "stages/teachers.py")
    return code("teachers/sam.py", "teachers/mask_nms.py", "stages/teachers.py")


def get_embed_code(wildcards):
    if get_embed_source(wildcards) == "simulated":
        return code("teachers/simulated.py", "teachers/text.py", "stages/teachers.py")
    return code("teachers/clip.py", "teachers/text.py", "stages/teachers.py")


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
