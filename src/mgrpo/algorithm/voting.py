"""Majority vote over a pool of (normalised) answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    """Outcome of a majority vote: the pseudo-label and how strongly the pool backs it."""

    label: str | None  # None when no rollout in the pool produced an answer
    votes: int  # rollouts whose answer equals the label
    valid: int  # rollouts with any answer

    @property
    def majority_ratio(self) -> float:
        """Share of answering rollouts that agree with the label (0 when nobody answered)."""
        return self.votes / self.valid if self.valid else 0.0


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """Most frequent answer in ``answers``; ``None`` entries (no answer) do not vote.

    Tie rule: among equally frequent answers, the one that occurs *first* in the pool wins.
    Pools list policy rollouts before momentum rollouts, so a tie goes to the policy's earliest
    answer; the rule is deterministic and independent of hashing.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote(label=None, votes=0, valid=0)
    best = max(counts.values())
    label = next(a for a in answers if a is not None and counts[a] == best)
    return Vote(label=label, votes=best, valid=sum(counts.values()))
