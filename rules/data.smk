# Data and base model. The toy splits are generated together so they stay disjoint.
# These rules are cheap or need the internet (Hugging Face downloads): on a cluster they run
# beside the orchestrator (local rules), so every job submitted to SLURM is a GPU job.


rule toy_data:
    output:
        expand("results/data/{split}.parquet", split=TOY_SPLITS),
    log:
        "results/logs/data/toy_data.log",
    localrule: True
    conda:
        "../envs/core.yaml"
    params:
        spec=json.dumps(CONFIG["data"]["toy"], sort_keys=True),
        outputs=" ".join(f"--out {s}=results/data/{s}.parquet" for s in TOY_SPLITS),
    shell:
        "python -m mgrpo toy-data --spec {params.spec:q} {params.outputs} > {log} 2>&1"


rule toy_model:
    input:
        sft="results/data/sft.parquet",
    output:
        directory("results/models/toy"),
    log:
        "results/logs/models/toy.log",
    benchmark:
        "results/benchmarks/models/toy.tsv"
    localrule: True
    conda:
        "../envs/train.yaml"
    threads: CONFIG["toy_model"]["threads"]
    params:
        spec=json.dumps(CONFIG["toy_model"], sort_keys=True),
    shell:
        "python -m mgrpo toy-model --spec {params.spec:q} --sft {input.sft} --out {output} > {log} 2>&1"


rule hf_problems:
    output:
        "results/data/hf/{dataset}.parquet",
    log:
        "results/logs/data/hf/{dataset}.log",
    benchmark:
        "results/benchmarks/data/hf/{dataset}.tsv"
    localrule: True
    conda:
        "../envs/core.yaml"
    params:
        spec=hf_spec,
    shell:
        "python -m mgrpo hf-data --spec {params.spec:q} --out {output} > {log} 2>&1"
