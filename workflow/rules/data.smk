# Stage 0: scenes. Real datasets are read in place; the synthetic benchmark is generated here.


rule synthesize_scene:
    input:
        code=get_code("synthesize"),
    output:
        directory(f"{config['datasets']['synthetic']['root']}/{{scene}}"),
    params:
        layout=get_synthetic_layout,
        settings=get_synthesize_settings,
    # Priorities order the ready jobs on few cores: every scene's long jobs (RGB fields, then mask
    # fields) start before the short per-scene evaluation jobs, so no long job is left to run alone
    # at the end.
    priority: 30
    log:
        "logs/synthesize_scene/synthetic/{scene}.log",
    benchmark:
        "benchmarks/synthesize_scene/synthetic/{scene}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield synthesize --layout {params.layout} --out {output} --settings {params.settings} > {log} 2>&1"
