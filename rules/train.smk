# Training in chunks: chunk k resumes from chunk k-1's checkpoint (policy, momentum policy,
# optimizer, LR schedule, RNG and data cursor). Intra-chunk resume state lives under resume/,
# outside the declared outputs, so a killed job continues where it stopped.


rule train_chunk:
    input:
        unpack(train_chunk_inputs),
    output:
        checkpoint=directory("results/runs/{run}/checkpoints/step{step}"),
        metrics="results/runs/{run}/metrics/to_step{step}.jsonl",
        rollouts="results/runs/{run}/rollouts/to_step{step}.parquet",
    log:
        "results/logs/runs/{run}/train_to_step{step}.log",
    benchmark:
        "results/benchmarks/runs/{run}/train_to_step{step}.tsv"
    conda:
        "../envs/train.yaml"
    threads: train_threads
    resources:
        gpu=train_gpus,
    params:
        settings=train_settings,
        start=chunk_start,
        init=init_path,
        base=lambda wildcards: base_model_path(run_model_key(wildcards.run)),
        data=train_data_path(),
        resume="results/runs/{run}/resume/to_step{step}",
        tensorboard=RUN_TENSORBOARD,
    shell:
        "python -m mgrpo train --settings {params.settings:q}"
        " --base-model {params.base} --train-data {params.data}"
        " --start {params.start} --end {wildcards.step} --init {params.init}"
        " --checkpoint {output.checkpoint} --metrics {output.metrics}"
        " --rollouts {output.rollouts} --resume-dir {params.resume}"
        " --tensorboard {params.tensorboard} > {log} 2>&1"
