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


# The mask field's own quality, before any text: per scene, the best-query IoU over the test views'
# ground-truth objects (all, things, stuff), for scenes with instance ground truth.
rule mask_quality_table:
    input:
        metrics=get_table_metrics,
        code=code("evaluate/tables.py"),
    output:
        "results/tables/mask_quality/{dataset}.csv",
    log:
        "logs/mask_quality_table/{dataset}.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield table --metrics {input.metrics} --out {output} "
        "--columns best_query_iou best_query_iou/things best_query_iou/stuff > {log} 2>&1"
