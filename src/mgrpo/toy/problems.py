"""Generated arithmetic problems: the embedded default's data.

Every problem asks for its answer in ``\\boxed{}`` and has a worked solution (used only by the
supervised warm start). Splits are disjoint by construction: a problem's expression is assigned
to exactly one split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

INSTRUCTION = "Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str
    solution: str
    level: int


def _terms_for_level(rng: random.Random, level: int) -> list[int]:
    """A two-digit number plus ``level + 1`` single digits: 3, 4 or 5 terms for levels 1-3.

    Each step of the worked solution adds one digit to a running sum, so errors are local and
    every extra term is one more chance to slip: longer chains are harder.
    """
    if level not in (1, 2, 3):
        raise ValueError(f"unknown toy level {level}")
    return [rng.randint(10, 99)] + [rng.randint(1, 9) for _ in range(level + 1)]


def _make(terms: list[int], level: int, split: str, index: int) -> Problem:
    expr = "+".join(str(t) for t in terms)
    partial = terms[0]
    steps = []
    for t in terms[1:]:
        steps.append(f"{partial}+{t}={partial + t}")
        partial += t
    return Problem(
        id=f"{split}-{index:05d}",
        question=f"Compute {expr}. {INSTRUCTION}",
        answer=str(partial),
        solution=f"{', '.join(steps)}. \\boxed{{{partial}}}",
        level=level,
    )


def generate_splits(
    sizes: dict[str, int], levels: dict[str, list[int]], seed: int
) -> dict[str, list[Problem]]:
    """Draw disjoint splits. ``sizes[split]`` problems from ``levels[split]`` (uniform mix).

    Splits are filled in the order given; an expression drawn for one split is never reused.
    """
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    out: dict[str, list[Problem]] = {}
    for split, size in sizes.items():
        split_levels = levels[split]
        problems: list[Problem] = []
        attempts = 0
        while len(problems) < size:
            attempts += 1
            if attempts > 50 * size + 1000:
                raise ValueError(
                    f"toy data: cannot draw {size} distinct problems for split {split!r} "
                    f"from levels {split_levels}"
                )
            level = split_levels[len(problems) % len(split_levels)]
            terms = _terms_for_level(rng, level)
            key = tuple(terms)
            if key in seen:
                continue
            seen.add(key)
            problems.append(_make(terms, level, split, len(problems)))
        out[split] = problems
    return out


def perturb_answer(solution: str, answer: str, rng: random.Random) -> str:
    """The same worked solution with one random digit of the final answer changed.

    Used by the warm start to teach the model a *diffuse* error distribution: wrong answers
    scatter over many values while the right one stays the mode, the regime in which majority
    voting finds better labels than single samples (as it does for large LLMs).
    """
    pos = rng.randrange(len(answer))
    digits = "123456789" if pos == 0 and len(answer) > 1 else "0123456789"
    wrong = answer[:pos] + rng.choice(digits.replace(answer[pos], "")) + answer[pos + 1 :]
    return solution.replace(f"={answer}.", f"={wrong}.").replace(
        f"\\boxed{{{answer}}}", f"\\boxed{{{wrong}}}"
    )
