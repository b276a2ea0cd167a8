# Stages 5-6: threshold-free renders, then the cheap evaluation where every threshold lives.


rule render:
    input:
        scene=get_scene_input,
        geometry="results/fields/{dataset}/{scene}/geometry-{backend}.h5",
        ckpt="results/fields/{dataset}/{scene}/maskfield-{backend}.pt",
        code=get_code("render"),
    output:
        "results/renders/{dataset}/{scene}/maskfield-{backend}.h5",
    params:
        scene=get_scene_flags,
    log:
        "logs/render/{dataset}/{scene}/{backend}.log",
    benchmark:
        "benchmarks/render/{dataset}/{scene}/{backend}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=30,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield --gpus {resources.gpu} render {params.scene} --geometry {input.geometry} --checkpoint {input.ckpt} "
        "--out {output} > {log} 2>&1"


rule render_teacher:
    input:
        scene=get_scene_input,
        masks="results/cache/{dataset}/{scene}/masks.h5",
        embeddings="results/cache/{dataset}/{scene}/embeddings.h5",
        code=get_code("render-teacher"),
    output:
        "results/renders/{dataset}/{scene}/teacher-2d.h5",
    params:
        scene=get_scene_flags,
    log:
        "logs/render_teacher/{dataset}/{scene}.log",
    benchmark:
        "benchmarks/render_teacher/{dataset}/{scene}.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield render-teacher {params.scene} --masks {input.masks} --embeddings {input.embeddings} "
        "--out {output} > {log} 2>&1"


rule evaluate:
    input:
        scene=get_scene_input,
        renders="results/renders/{dataset}/{scene}/{method}.h5",
        text="results/cache/{dataset}/{scene}/text.h5",
        code=get_code("evaluate"),
    output:
        "results/metrics/{dataset}/{scene}/{method}.csv",
    params:
        scene=get_scene_flags,
        # The only rule that sees the inference settings, and only its protocol's part: changing
        # a threshold reruns this and the tables, nothing upstream.
        settings=get_inference_settings,
    log:
        "logs/evaluate/{dataset}/{scene}/{method}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{scene}/{method}.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield evaluate {params.scene} --renders {input.renders} --text {input.text} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


# On demand (no table needs it): which class each ground-truth class is predicted as, over the test
# views of a segmentation scene, with the same inference settings as `evaluate`. The diagnostic
# behind a low per-class IoU, e.g.
#   snakemake --cores 2 results/confusion/synthetic/room/maskfield-nerf.csv
rule confusion:
    input:
        scene=get_scene_input,
        renders="results/renders/{dataset}/{scene}/{method}.h5",
        text="results/cache/{dataset}/{scene}/text.h5",
        code=get_code("confusion"),
    output:
        "results/confusion/{dataset}/{scene}/{method}.csv",
    params:
        scene=get_scene_flags,
        settings=get_segmentation_settings,
    log:
        "logs/confusion/{dataset}/{scene}/{method}.log",
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield confusion {params.scene} --renders {input.renders} --text {input.text} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


# On demand, like `confusion`: per test view and ground-truth object, how its best-matching mask
# covers it (merges vs boundary errors), for scenes with instance maps. Nothing upstream reruns.
rule objects:
    input:
        scene=get_scene_input,
        renders="results/renders/{dataset}/{scene}/{method}.h5",
        code=get_code("objects"),
    output:
        "results/objects/{dataset}/{scene}/{method}.csv",
    params:
        scene=get_scene_flags,
    log:
        "logs/objects/{dataset}/{scene}/{method}.log",
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield objects {params.scene} --renders {input.renders} --out {output} > {log} 2>&1"
