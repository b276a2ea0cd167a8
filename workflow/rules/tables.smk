# The paper-shaped tables: one row per method (and backend), one column per scene x metric, plus the mean.


rule table:
    input:
        metrics=get_table_metrics,
        figures=get_table_figures,  # not read: they make the table's report show its figures
        code=get_code("table"),
    output:
        report(
            "results/tables/{dataset}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"dataset": "{dataset}", "table": "metrics"},
        ),
    params:
        columns="",  # the paper's headline metrics (maskfield table's default)
    log:
        "logs/table/{dataset}.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/maskfield.yaml"
    shell:
        "maskfield table --metrics {input.metrics} --out {output} {params.columns} > {log} 2>&1"


# The mask field's own quality, before any text: per scene, the best-query IoU over the test views'
# ground-truth objects (all, things, stuff), for scenes with instance ground truth.
use rule table as mask_quality_table with:
    output:
        report(
            "results/tables/mask_quality/{dataset}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"dataset": "{dataset}", "table": "mask quality (best-query IoU)"},
        ),
    params:
        columns="--columns best_query_iou best_query_iou/things best_query_iou/stuff",
    log:
        "logs/mask_quality_table/{dataset}.log",
