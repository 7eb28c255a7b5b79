"""Scoring for the project's lm-eval tasks: lm-eval's own graders, applied to all k samples."""

from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.tasks.aime.utils import process_results as aime_process_results


def process_math(doc: dict, results: list) -> dict:
    """Mean over the k responses of lm-eval's AIME grader (last \\boxed{} vs the answer)."""
    responses = results[0]
    scores = [aime_process_results(doc, [response])["exact_match"] for response in responses]
    return {"exact_match": sum(scores) / len(scores)}


def process_choice(doc: dict, results: list) -> dict:
    """Mean over the k extracted letters of lm-eval's exact match with the correct letter."""
    letters = results[0]
    scores = exact_match_hf_evaluate(
        predictions=letters,
        references=[doc["answer"]] * len(letters),
        ignore_case=True,
        ignore_punctuation=True,
    )["exact_match"]
    return {"exact_match": float(scores)}
