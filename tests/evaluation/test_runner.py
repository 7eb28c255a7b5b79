"""Evaluation runs: summaries by hand, the toy checkpoint, lm-eval on the same generations, and
every grading kind end to end through the vLLM seam (scripted stand-in engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_fixtures import KINDS, write_fixture
from vllm_stand_in import SamplingParams, ScriptedLLM

from mgrpo import lm
from mgrpo.config import validate_config
from mgrpo.data import ProblemSet, read_problems
from mgrpo.evaluation.backends import Completion, VllmBackend, stop_token_ids
from mgrpo.evaluation.grade_math import MathGrader
from mgrpo.evaluation.runner import evaluate_model, summarize
from mgrpo.hf_data import write_hf_problems


def spec_for(benchmark: dict, **evaluation) -> dict:
    """A benchmark's validated settings merged with the evaluation section, as the rule does."""
    config = validate_config(
        {"runs": {"r": {}}, "benchmarks": {"b": benchmark}, "evaluation": evaluation}
    )
    return {**config["benchmarks"]["b"], **config["evaluation"]}


TOY = {"source": "toy", "split": "test", "samples": 2, "max_new_tokens": 12, "limit": 5}


def test_summary_by_hand() -> None:
    texts = [
        ["\\boxed{0.5}", "\\boxed{3}", "\\boxed{3}"],
        ["no answer", "\\boxed{7}", "\\boxed{7}"],
    ]
    problems = ProblemSet(ids=["p1", "p2"], questions=["", ""], answers=["\\frac{1}{2}", "7"])
    verdicts = MathGrader(workers=1).grade(problems, texts)
    completions = [[Completion(t, 4, "stop") for t in row] for row in texts]
    summary, records = summarize(problems, completions, verdicts)
    assert [r["correct"] for r in records] == [True, False, False, False, True, True]
    assert summary["accuracy"] == pytest.approx(3 / 6)  # avg@3
    assert summary["majority_accuracy"] == pytest.approx(1 / 2)  # p1 votes "3" (wrong), p2 "7"
    assert summary["answer_rate"] == pytest.approx(5 / 6)
    assert summary["verdicts"] == {"correct": 3, "wrong_answer": 2, "no_answer": 1}
    with pytest.raises(ValueError, match="expected 3 samples for each of 2 problems"):
        summarize(problems, completions[:1], verdicts)


def test_evaluation_of_a_checkpoint_is_reproducible(toy_dir: Path) -> None:
    problems = toy_dir / "data" / "test.parquet"
    spec = spec_for(TOY, device="cpu", micro_batch_size=4)
    summary, records = evaluate_model(toy_dir / "model", problems, spec)
    _, records_again = evaluate_model(toy_dir / "model", problems, spec)
    assert records == records_again
    assert (summary["problems"], summary["samples"], len(records)) == (5, 10, 10)
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 10)
    assert summary["sampling"] == {"temperature": 0.8, "max_new_tokens": 12, "seed": 0}
    assert summary["backend"]["name"] == "local"  # `auto` on a machine without vLLM
    assert {r["problem_id"] for r in records} == set(read_problems(problems).ids[:5])


@pytest.mark.slow
def test_lm_eval_runs_on_the_same_generations(toy_dir: Path, tmp_path: Path) -> None:
    gpqa = tmp_path / "gpqa.parquet"
    write_hf_problems(write_fixture("gpqa", tmp_path / "gpqa.jsonl"), gpqa)
    cases = [
        (toy_dir / "data" / "test.parquet", TOY),
        (gpqa, {"source": "file", "path": str(gpqa), "kind": "multiple_choice", "samples": 2,
                "max_new_tokens": 12}),
    ]  # fmt: skip
    for problems, benchmark in cases:
        spec = spec_for(benchmark, device="cpu")
        native, native_records = evaluate_model(toy_dir / "model", problems, spec)
        harness, harness_records = evaluate_model(
            toy_dir / "model", problems, {**spec, "lm_eval": True}
        )
        assert [r["response"] for r in harness_records] == [r["response"] for r in native_records]
        assert harness["accuracy"] == native["accuracy"]
        assert set(harness["lm_eval"]) == {"task", "exact_match"}
        assert "lm_eval" not in native


# ----------------------------------------------------------------------------- every kind
@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmarks")
    paths = {}
    for name in KINDS:
        paths[name] = root / f"{name}.parquet"
        write_hf_problems(write_fixture(name, root / f"{name}.jsonl"), paths[name])
    return paths


def run_scripted(toy_dir: Path, problems: Path, kind: str, script, samples: int, **extra):
    tokenizer = lm.load_tokenizer(toy_dir / "model")
    backend = VllmBackend(
        toy_dir / "model",
        stop_token_ids(toy_dir / "model", tokenizer),
        llm_class=ScriptedLLM.make(script),
        sampling_params_class=SamplingParams,
    )
    spec = spec_for(
        {"source": "file", "path": str(problems), "kind": kind, "samples": samples, **extra},
        grader={"timeout_s": 1, "workers": 2},
        sandbox={"case_timeout_s": 1, "total_timeout_s": 3},
    )
    summary, records = evaluate_model(toy_dir / "model", problems, spec, backend=backend)
    verdicts = [r["verdict"] for r in records]
    return summary, records, [verdicts[i : i + samples] for i in range(0, len(verdicts), samples)]


@pytest.mark.slow
def test_math_end_to_end(toy_dir: Path, converted: dict[str, Path]) -> None:
    script = [
        ["so \\boxed{42}", "\\boxed{41}"],
        ["\\boxed{\\frac{2}{4}}", "no box here"],
        ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{9}"],
    ]
    summary, records, verdicts = run_scripted(
        toy_dir, converted["aime"], "math", script, 2, lm_eval=True
    )
    assert verdicts == [
        ["correct", "wrong_answer"],
        ["correct", "no_answer"],  # 2/4 = 1/2 by math-verify
        ["timeout", "correct"],  # the tower is cut off at the grader's deadline
    ]
    assert summary["accuracy"] == pytest.approx(3 / 6)
    assert summary["majority_accuracy"] == pytest.approx(2 / 3)  # ties go to the first answer
    assert summary["backend"]["name"] == "vllm"
    # lm-eval's own AIME grader on the same responses compares strings: \frac{2}{4} != 1/2.
    assert summary["lm_eval"] == {"task": "mgrpo_math.yaml", "exact_match": pytest.approx(1 / 3)}
    assert records[0]["response_tokens"] == len("so \\boxed{42}")


@pytest.mark.slow
def test_multiple_choice_end_to_end(toy_dir: Path, converted: dict[str, Path]) -> None:
    letters = read_problems(converted["gpqa"], "multiple_choice").answers
    wrong = next(x for x in "ABCD" if x != letters[1])
    script = [
        [f"The answer is ({letters[0]})", f"\\boxed{{{letters[0]}}}"],
        [f"Two options are out, so {wrong}", "I am not sure."],
        [f"Answer: {letters[2]}", f"The answer is ({letters[2]})."],
    ]
    summary, records, verdicts = run_scripted(
        toy_dir, converted["gpqa"], "multiple_choice", script, 2, lm_eval=True
    )
    assert verdicts == [["correct"] * 2, ["wrong_answer", "no_answer"], ["correct"] * 2]
    assert [r["answer"] for r in records[:3]] == [letters[0], letters[0], wrong]
    assert summary["accuracy"] == pytest.approx(4 / 6)
    # lm-eval's "answer is (X)" regex misses \boxed{X} and "Answer: X".
    assert summary["lm_eval"]["exact_match"] == pytest.approx(1 / 3)
    mmlu, _, mmlu_verdicts = run_scripted(
        toy_dir,
        converted["mmlu_pro"],
        "multiple_choice",
        [["The answer is (B)"], ["\\boxed{F}"]],
        1,
    )
    assert mmlu_verdicts == [["correct"], ["correct"]] and mmlu["majority_accuracy"] == 1.0


@pytest.mark.slow
def test_code_end_to_end(toy_dir: Path, converted: dict[str, Path]) -> None:
    add = "```python\ndef add_two(a, b):\n    return a + b\n```"
    half = "Here:\n```python\ndef root(n):\n    return n // 2\n```"
    _, records, verdicts = run_scripted(toy_dir, converted["mbpp"], "code", [[add], [half]], 1)
    assert verdicts == [["correct"], ["wrong_answer"]]
    assert records[0]["answer"] == "def add_two(a, b):\n    return a + b\n"
    assert records[1]["detail"].startswith("0/2 tests passed")
    stdin = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    spin = "```python\nwhile True:\n    pass\n```"
    largest = (
        "```python\nclass Solution:\n    def largest(self, nums):\n        return max(nums)\n```"
    )
    summary, _, verdicts = run_scripted(
        toy_dir, converted["livecodebench"], "code", [[stdin, spin], [largest, "no code"]], 2
    )
    assert verdicts == [["correct", "timeout"], ["correct", "no_answer"]]
    assert summary["accuracy"] == pytest.approx(2 / 4)
    assert summary["pass_at_k"] == 1.0 and "majority_accuracy" not in summary
    assert summary["grader"]["isolation"]  # what the sandbox achieved on this machine
