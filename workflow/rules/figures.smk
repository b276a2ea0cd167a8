# Pictures of every method's test views, with the inference settings of `evaluate`: per view
# image | ground truth | prediction (one figure per prompt on query scenes), then one contact sheet
# per scene and method. The tables take the contact sheets as inputs, so that the report of a table
# (snakemake --report results/report.html results/tables/<dataset>.csv) shows its figures.


rule figures:
    input:
        scene=get_scene_input,
        renders="results/renders/{dataset}/{scene}/{method}.h5",
        text="results/cache/{dataset}/{scene}/text.h5",
        code=get_code("figures"),
    output:
        report(
            directory("results/figures/{dataset}/{scene}/{method}"),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{dataset}/{scene}",
            labels={"method": "{method}", "figure": "{figure}"},
        ),
    wildcard_constraints:
        method="[^/.]+",  # <method>.png is the contact sheet's
    params:
        scene=get_scene_flags,
        settings=get_inference_settings,  # the protocol's part, as for `evaluate`
    log:
        "logs/figures/{dataset}/{scene}/{method}.log",
    benchmark:
        "benchmarks/figures/{dataset}/{scene}/{method}.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield figures {params.scene} --renders {input.renders} --text {input.text} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


rule contact_sheet:
    input:
        figures="results/figures/{dataset}/{scene}/{method}",
        code=get_code("contact-sheet"),
    output:
        report(
            "results/figures/{dataset}/{scene}/{method}.png",
            caption="../report/contact_sheet.rst",
            category="Contact sheets",
            subcategory="{dataset}",
            labels={"scene": "{scene}", "method": "{method}"},
        ),
    log:
        "logs/contact_sheet/{dataset}/{scene}/{method}.log",
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield contact-sheet --figures {input.figures} --out {output} > {log} 2>&1"
