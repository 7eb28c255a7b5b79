# Data and base model. The toy splits are generated together so they stay disjoint.


rule toy_data:
    output:
        expand("results/data/{split}.parquet", split=TOY_SPLITS),
    params:
        spec=json.dumps(CONFIG["data"]["toy"], sort_keys=True),
        outputs=" ".join(f"--out {s}=results/data/{s}.parquet" for s in TOY_SPLITS),
    log:
        "results/logs/data/toy_data.log",
    conda:
        "../envs/core.yaml"
    shell:
        "python -m mgrpo toy-data --spec {params.spec:q} {params.outputs} > {log} 2>&1"


rule toy_model:
    input:
        sft="results/data/sft.parquet",
    output:
        directory("results/models/toy"),
    params:
        spec=json.dumps(CONFIG["toy_model"], sort_keys=True),
    threads: CONFIG["toy_model"]["threads"]
    log:
        "results/logs/models/toy.log",
    benchmark:
        "results/benchmarks/models/toy.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "python -m mgrpo toy-model --spec {params.spec:q} --sft {input.sft} --out {output} > {log} 2>&1"
