"""Which letter a multiple-choice response commits to: a table of real-looking responses.

Each row is (response, number of options, the letter a careful reader grades, or None for no
answer). The rows below the first block were wrong before the final-answer rule: a later
mention of another letter, a hedge, or a pronoun read as an option.
"""

from __future__ import annotations

import pytest

from mgrpo.evaluation.grade_choice import extract_choice

TEN = [f"option {i}" for i in range(10)]  # MMLU-Pro: A-J

TABLE = [
    # plain commitments, as the prompt asks for them
    ("Let me work through it.\n...\nThe answer is (C).", 4, "C"),
    ("**Final Answer:** The answer is (D)", 4, "D"),
    ("Therefore, the correct option is B.", 4, "B"),
    ("Answer: J", 10, "J"),
    ("The answer is \\boxed{(B)}.", 4, "B"),
    ("Option A is correct because the force doubles.", 4, "A"),
    ("The answer is A because the force doubles.", 4, "A"),
    # a later mention of another letter is not an answer
    ("The answer is (B). Note that answer D is a common trap.", 4, "B"),
    ("The answer is (B). Option D looks similar but ignores friction.", 4, "B"),
    ("The answer is (C).\n\nWhy not D? Because D double-counts the mass.", 4, "C"),
    ("Answer: (E)\n\nExplanation: (A) and (B) confuse mass with weight.", 10, "E"),
    # the final statement wins over an earlier tentative one
    ("At first the answer is (A), but friction matters, so the answer is (C).", 4, "C"),
    # pronoun and article are words, not options (ten options include A and I)
    ("Answer: I think it is (B).", 10, "B"),
    ("Answer: I believe the correct option is (G).", 10, "G"),
    ("Answer: A good choice is (C).", 10, "C"),
    ("The answer is I, since the others violate conservation.", 10, "I"),
    ("Answer: I", 10, "I"),
    # hedged answers are no answer
    ("The answer is (A) or (B).", 4, None),
    ("\\boxed{A \\text{ or } B}", 4, None),
    ("\\boxed{A, C}", 4, None),
    ("The answer is A/B, depending on the convention.", 4, None),
    ("Final answer: (B) and (D)", 4, None),
    ("I can't decide.\nIt is either (A) or (C).", 4, None),
    ("The answer is (A), or possibly (B).", 4, None),
    ("Both are defensible:\n(A) or (C)", 4, None),
    # a hedged final answer does not fall back to an earlier letter
    ("The answer is (C). Hmm, on reflection: the answer is (A) or (B).", 4, None),
]


@pytest.mark.parametrize(("response", "count", "letter"), TABLE)
def test_the_final_answer_is_read(response: str, count: int, letter: str | None) -> None:
    assert extract_choice(response, TEN[:count]) == letter
