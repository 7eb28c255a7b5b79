# Tables and figures, from results/ only. `reported()` marks each for the HTML report
# (`snakemake --report results/report.html`) with its caption from workflow/report/.


rule collapse:
    input:
        evals=eval_files(),
    output:
        reported(["results/tables/collapse.csv"]),
    log:
        "results/logs/report/collapse.log",
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
        provenance=report_provenance(),
    shell:
        "python -m mgrpo report collapse --config {params.config:q}"
        " --evals {input.evals} --out {output} > {log} 2>&1"


rule tables:
    input:
        evals=eval_files(),
        collapse="results/tables/collapse.csv",
    output:
        reported(report_table_files()),
    log:
        "results/logs/report/tables.log",
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
        provenance=report_provenance(),
    shell:
        "python -m mgrpo report tables --config {params.config:q} --evals {input.evals}"
        " --collapse {input.collapse} --out-dir results/tables > {log} 2>&1"


rule figures:
    input:
        evals=eval_files(),
        metrics=metrics_files(),
        collapse="results/tables/collapse.csv",
    output:
        reported(report_figure_files()),
    log:
        "results/logs/report/figures.log",
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
        provenance=report_provenance(),
    shell:
        "python -m mgrpo report figures --config {params.config:q} --evals {input.evals}"
        " --metrics {input.metrics} --collapse {input.collapse} --out-dir results/figures"
        " > {log} 2>&1"
