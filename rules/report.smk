# Tables and figures, from results/ only; cheap, so local rules on a cluster. `collapse` runs
# both detectors (labelled: validation accuracy; label-free: training signals only) once; tables
# and figures read its verdicts. The default target builds them after every evaluation; naming
# report files as targets builds them from what results/ holds now (see report_inputs in
# common.smk). `reported()` marks each output for the HTML report
# (`snakemake --report results/report.html`) with its caption from workflow/report/.


rule collapse:
    input:
        evals=report_evals,
        metrics=report_metrics,
    output:
        reported(["results/tables/collapse.csv"]),
    log:
        "results/logs/report/collapse.log",
    localrule: True
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
        provenance=report_provenance(),
    shell:
        "python -m mgrpo report collapse --config {params.config:q}"
        " --evals {input.evals} --metrics {input.metrics} --out {output} > {log} 2>&1"


rule tables:
    input:
        evals=report_evals,
        collapse="results/tables/collapse.csv",
        paper=PAPER_NUMBERS,
    output:
        reported(report_table_files()),
    log:
        "results/logs/report/tables.log",
    localrule: True
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
        provenance=report_provenance(),
    shell:
        "python -m mgrpo report tables --config {params.config:q} --evals {input.evals}"
        " --collapse {input.collapse} --paper {input.paper} --out-dir results/tables"
        " > {log} 2>&1"


rule figures:
    input:
        evals=report_evals,
        metrics=report_metrics,
        collapse="results/tables/collapse.csv",
    output:
        reported(report_figure_files()),
    log:
        "results/logs/report/figures.log",
    localrule: True
    conda:
        "../envs/core.yaml"
    params:
        config=report_config(),
        provenance=report_provenance(),
    shell:
        "python -m mgrpo report figures --config {params.config:q} --evals {input.evals}"
        " --metrics {input.metrics} --collapse {input.collapse} --out-dir results/figures"
        " > {log} 2>&1"
