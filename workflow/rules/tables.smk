# The paper-shaped tables: one row per method, one column per scene x metric, plus the mean.


rule table:
    input:
        metrics=get_table_metrics,
        code=code("evaluate/tables.py"),
    output:
        "results/tables/{dataset}.csv",
    log:
        "logs/table/{dataset}.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield table --metrics {input.metrics} --out {output} > {log} 2>&1"
