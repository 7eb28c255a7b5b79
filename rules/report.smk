# Tables and figures, from results/ only. `collapse` runs both detectors (labelled: validation
# accuracy; label-free: training signals only) once; tables and figures read its verdicts.


rule collapse:
    input:
        evals=eval_files(),
        metrics=metrics_files(),
    output:
        "results/tables/collapse.csv",
    log:
        "results/logs/report/collapse.log",
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
    shell:
        "python -m mgrpo report collapse --config {params.config:q}"
        " --evals {input.evals} --metrics {input.metrics} --out {output} > {log} 2>&1"


rule tables:
    input:
        evals=eval_files(),
        collapse="results/tables/collapse.csv",
    output:
        report_table_files(),
    log:
        "results/logs/report/tables.log",
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
    shell:
        "python -m mgrpo report tables --config {params.config:q} --evals {input.evals}"
        " --collapse {input.collapse} --out-dir results/tables > {log} 2>&1"


rule figures:
    input:
        evals=eval_files(),
        metrics=metrics_files(),
        collapse="results/tables/collapse.csv",
    output:
        report_figure_files(),
    log:
        "results/logs/report/figures.log",
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
    shell:
        "python -m mgrpo report figures --config {params.config:q} --evals {input.evals}"
        " --metrics {input.metrics} --collapse {input.collapse} --out-dir results/figures"
        " > {log} 2>&1"
