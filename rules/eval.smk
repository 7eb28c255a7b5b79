# Evaluation: one job per (run, checkpoint step, benchmark). Step 0 is the base model, which
# is evaluated once per (model, benchmark) and shared by every run that starts from it.


rule eval_checkpoint:
    input:
        unpack(eval_inputs),
    output:
        summary="results/eval/{run}/step{step}/{bench}.json",
        records="results/eval/{run}/step{step}/{bench}.samples.parquet",
    log:
        "results/logs/eval/{run}/step{step}/{bench}.log",
    benchmark:
        "results/benchmarks/eval/{run}/step{step}/{bench}.tsv"
    conda:
        "../envs/eval.yaml"
    params:
        spec=eval_spec,
        fingerprint=run_fingerprint,
        tensorboard=RUN_TENSORBOARD,
    shell:
        "python -m mgrpo eval --spec {params.spec:q} --model {input.checkpoint}/policy"
        " --problems {input.problems} --out {output.summary} --records {output.records}"
        " --run {wildcards.run} --step {wildcards.step} --benchmark {wildcards.bench}"
        " --fingerprint {params.fingerprint} --tensorboard {params.tensorboard} > {log} 2>&1"


rule eval_base_model:
    input:
        unpack(base_eval_inputs),
    output:
        summary="results/eval/base/{model}/{bench}.json",
        records="results/eval/base/{model}/{bench}.samples.parquet",
    log:
        "results/logs/eval/base/{model}/{bench}.log",
    benchmark:
        "results/benchmarks/eval/base/{model}/{bench}.tsv"
    conda:
        "../envs/eval.yaml"
    params:
        spec=eval_spec,
        model=lambda wildcards: base_model_path(wildcards.model),
    shell:
        "python -m mgrpo eval --spec {params.spec:q} --model {params.model}"
        " --problems {input.problems} --out {output.summary} --records {output.records}"
        " --run base --step 0 --benchmark {wildcards.bench} > {log} 2>&1"


rule eval_step0:
    input:
        unpack(step0_eval_inputs),
    output:
        summary="results/eval/{run}/step0/{bench}.json",
        records="results/eval/{run}/step0/{bench}.samples.parquet",
    log:
        "results/logs/eval/{run}/step0/{bench}.log",
    localrule: True
    conda:
        "../envs/core.yaml"
    params:
        tensorboard=RUN_TENSORBOARD,
    shell:
        "python -m mgrpo copy-eval --src {input.summary} --src-records {input.records}"
        " --out {output.summary} --records {output.records} --run {wildcards.run}"
        " --tensorboard {params.tensorboard} > {log} 2>&1"
