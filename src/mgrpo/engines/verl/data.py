"""Problem files as verl's RL dataset (``RLHFDataset``: one row per prompt, chat messages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA_SOURCE = "mgrpo"


def verl_rows(problems: Any) -> list[dict[str, Any]]:
    """One verl row per problem; the id and normalised answer ride along in ``extra_info``."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer or ""},
            "extra_info": {"index": i, "problem_id": pid, "answer": answer},
        }
        for i, (pid, question, answer) in enumerate(
            zip(problems.ids, problems.questions, problems.answers, strict=True)
        )
    ]


def write_verl_dataset(
    problems_path: str | Path, tokenizer: Any, max_prompt_tokens: int, out: str | Path
) -> int:
    """Convert a problem file; a prompt over ``max_prompt_tokens`` is an error, as locally.

    verl's agent loop would left-truncate an over-long prompt with a warning; the prompts are
    therefore measured here, rendered with the chat template exactly as the agent loop renders
    them. A tokenizer without a chat template is refused (verl always applies one).
    """
    import pandas as pd

    from mgrpo.data import read_problems
    from mgrpo.io import write_parquet
    from mgrpo.lm import encode_prompts

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: no chat template; the verl "
            "engine renders every prompt as a chat message"
        )
    problems = read_problems(problems_path)
    encode_prompts(tokenizer, problems.questions, max_prompt_tokens)  # raises on over-long ones
    write_parquet(out, pd.DataFrame.from_records(verl_rows(problems)))
    return len(problems)
