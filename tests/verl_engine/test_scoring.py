"""M-GRPO's step on real verl ``DataProto`` batches: pools by uid, never by row position."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.utils.seqlen_balancing import get_seqlen_balanced_partitions

from mgrpo.algorithm.groups import score_group
from mgrpo.algorithm.methods import method_from_settings
from mgrpo.engines.verl import scoring

WIDTH = 6  # response tokens per row (padded)


def mgrpo(**overrides):
    return method_from_settings({"method": "mgrpo", "rollouts": 4, "iqr": True, **overrides})


def make_batch(pools: list[dict], method) -> tuple[DataProto, list[str]]:
    """Rows for each pool in canonical order (policy rows, then momentum rows).

    A pool gives per-rollout ``texts``, trajectory ``entropy`` (constant per token) and
    ``length`` (response tokens), and optionally ``certainty`` and ``truth``.
    """
    rows = []
    for p, pool in enumerate(pools):
        for i in range(method.group_size):
            rows.append((p, i, pool))
    size = len(rows)
    mask = torch.zeros(size, WIDTH, dtype=torch.long)
    entropy = torch.zeros(size, WIDTH)
    certainty = torch.zeros(size, WIDTH)
    texts = []
    for r, (_, i, pool) in enumerate(rows):
        n = pool.get("length", [WIDTH] * method.group_size)[i]
        mask[r, :n] = 1
        entropy[r, :n] = pool["entropy"][i]
        entropy[r, n:] = 99.0  # padding must never count
        certainty[r, :n] = pool.get("certainty", [0.0] * method.group_size)[i]
        texts.append(pool["texts"][i])
    batch = DataProto.from_dict(
        tensors={
            "responses": torch.arange(size * WIDTH).reshape(size, WIDTH),
            "response_mask": mask,
            "attention_mask": torch.cat([torch.ones(size, 3, dtype=torch.long), mask], 1),
            scoring.ENTROPY: entropy,
            scoring.SELF_CERTAINTY: certainty,
        },
        non_tensors={
            scoring.UID: np.array([f"uid-{p}" for p, _, _ in rows], dtype=object),
            scoring.PROMPT_INDEX: np.array([p for p, _, _ in rows]),
            scoring.POOL_INDEX: np.array([i for _, i, _ in rows]),
            scoring.MOMENTUM: np.array([i >= method.policy_rollouts for _, i, _ in rows]),
            scoring.PROMPT_ID: np.array([f"q{p}" for p, _, _ in rows], dtype=object),
            scoring.TRUTH: np.array([pool.get("truth") for _, _, pool in rows], dtype=object),
        },
    )
    return batch, texts


def reordered(batch: DataProto, texts: list[str], order: list[int]) -> tuple[DataProto, list[str]]:
    out = batch.select_idxs(np.array(order))
    return out, [texts[i] for i in order]


def balance_order(batch: DataProto, dp: int) -> list[int]:
    """The permutation verl's RayPPOTrainer._balance_batch applies (same partitioning calls)."""
    seqlen = batch.batch["attention_mask"].sum(-1).tolist()
    parts = get_seqlen_balanced_partitions(seqlen, k_partitions=dp, equal_size=True)
    for k, part in enumerate(parts):
        part.sort(key=lambda x: (seqlen[x], x))
        parts[k] = part[::2] + part[1::2][::-1]
    return [i for part in parts for i in part]


POOLS = [
    {  # rollout 0 is a low-entropy outlier; unfiltered, its 5 would win the 2:2 tie
        "texts": [r"\boxed{5}", r"\boxed{3}", r"\boxed{5}", r"\boxed{3}"],
        "entropy": [0.01, 1.0, 1.1, 0.9],
        "length": [2, 6, 5, 3],
        "truth": "3",
    },
    {  # nobody answers
        "texts": ["no box", "still none", "nope", "none"],
        "entropy": [0.5, 0.6, 0.7, 0.8],
        "length": [4, 4, 6, 1],
        "truth": None,
    },
    {  # the momentum rollout breaks the tie between 7 and 8
        "texts": [r"\boxed{7}", r"\boxed{8}", r"\boxed{8}", r"\boxed{7}"],
        "entropy": [1.0, 1.0, 1.0, 1.0],
        "truth": "8",
    },
]


def expected(method, pools):
    """score_group called directly on each pool in canonical order."""
    from mgrpo.algorithm.answers import extract_answer

    out = []
    for pool in pools:
        out.append(
            score_group(
                [extract_answer(t) for t in pool["texts"]],
                [i >= method.policy_rollouts for i in range(method.group_size)],
                pool["entropy"],
                method,
                self_certainties=pool.get("certainty"),
                truth=pool.get("truth"),
            )
        )
    return out


def check(score, batch, texts, method, pools):
    want = expected(method, pools)
    assert [p.group for p in score.pools] == want
    assert [p.prompt_id for p in score.pools] == [f"q{i}" for i in range(len(pools))]
    nt = batch.non_tensor_batch
    for rows, group in zip(score.rows, want, strict=True):
        assert [int(nt[scoring.POOL_INDEX][r]) for r in rows] == list(range(method.group_size))
        for r, used, adv, reward in zip(
            rows, group.trained, group.advantages, group.rewards, strict=True
        ):
            assert score.trained[r] == used
            assert score.advantages[r] == (adv if used else 0.0)
            assert score.rewards[r] == (reward if used else 0.0)
    for pool, spec, rows in zip(score.pools, pools, score.rows, strict=True):
        assert list(pool.texts) == [texts[r] for r in rows] == spec["texts"]
        lengths = spec.get("length", [WIDTH] * method.group_size)
        assert list(pool.lengths) == lengths
        assert pool.entropies == pytest.approx(spec["entropy"])  # padding (99) never counted


@pytest.mark.parametrize("layout", ["policy_first", "momentum_first", "balanced", "shuffled"])
def test_pools_are_found_by_uid_whatever_the_row_order(layout):
    method = mgrpo()
    batch, texts = make_batch(POOLS, method)
    size = len(batch)
    if layout == "momentum_first":
        momentum = [r for r in range(size) if batch.non_tensor_batch[scoring.MOMENTUM][r]]
        order = momentum + [r for r in range(size) if r not in momentum]
    elif layout == "balanced":
        order = balance_order(batch, dp=4)
    elif layout == "shuffled":
        order = np.random.default_rng(3).permutation(size).tolist()
    else:
        order = list(range(size))
    if layout != "policy_first":
        assert order != list(range(size))
    batch, texts = reordered(batch, texts, order)
    score = scoring.score_batch(batch, method, texts, equal=None)
    check(score, batch, texts, method, POOLS)


def test_the_filter_drops_the_outlier_from_vote_and_training():
    method = mgrpo()
    batch, texts = make_batch(POOLS, method)
    score = scoring.score_batch(batch, method, texts, equal=None)
    first = score.pools[0].group
    assert first.kept == [False, True, True, True]
    assert first.label == "3"
    assert first.trained == [False, True, True, False]  # kept policy rollouts only
    assert not score.trained[score.rows[0][0]]
    assert not score.trained[score.rows[0][3]]  # the momentum rollout never trains
    unfiltered = scoring.score_batch(batch, mgrpo(iqr=False), texts, equal=None)
    assert unfiltered.pools[0].group.label == "5"


def test_a_prompt_without_answers_trains_with_zero_advantage():
    method = mgrpo()
    batch, texts = make_batch(POOLS, method)
    score = scoring.score_batch(batch, method, texts, equal=None)
    none = score.pools[1].group
    assert none.label is None
    assert none.rewards[:3] == [0.0, 0.0, 0.0]
    assert all(score.advantages[r] == 0.0 for r in score.rows[1])


def test_momentum_rollouts_vote():
    method = mgrpo(iqr=False)
    batch, texts = make_batch(POOLS, method)
    score = scoring.score_batch(batch, method, texts, equal=None)
    tie = score.pools[2].group
    assert tie.label == "7"  # 7 (policy 0, momentum 3) vs 8 (policy 1, 2): tie -> first in pool
    assert tie.rewards == [1.0, 0.0, 0.0, None]


def test_intuitor_rewards_are_the_self_certainties():
    method = method_from_settings({"method": "intuitor", "rollouts": 3})
    pools = [
        {
            "texts": ["a", "b", "c"],
            "entropy": [1.0, 1.0, 1.0],
            "certainty": [0.1, 0.5, 0.9],
            "length": [2, 6, 4],
        }
    ]
    batch, texts = make_batch(pools, method)
    batch, texts = reordered(batch, texts, [2, 0, 1])
    score = scoring.score_batch(batch, method, texts, equal=None)
    assert score.pools[0].group.rewards == pytest.approx([0.1, 0.5, 0.9])
    assert score.pools[0].self_certainties == pytest.approx([0.1, 0.5, 0.9])


def test_token_advantages_broadcast_over_response_tokens_only():
    method = mgrpo()
    batch, texts = make_batch(POOLS, method)
    score = scoring.score_batch(batch, method, texts, equal=None)
    tokens = scoring.token_advantages(score, batch.batch["response_mask"])
    r = score.rows[0][0]
    assert tokens[r, :6].tolist() == pytest.approx([score.advantages[r]] * 6)
    r = score.rows[0][3]  # momentum rollout: length 3, no advantage
    assert tokens[r].abs().sum() == 0


def test_a_lost_row_is_an_error_naming_the_prompt():
    method = mgrpo()
    batch, texts = make_batch(POOLS, method)
    keep = [r for r in range(len(batch)) if r != 5]
    batch, texts = reordered(batch, texts, keep)
    with pytest.raises(ValueError, match="uid-1: pool positions"):
        scoring.score_batch(batch, method, texts, equal=None)


def test_a_momentum_row_at_a_policy_position_is_an_error():
    method = mgrpo()
    batch, texts = make_batch(POOLS, method)
    batch.non_tensor_batch[scoring.MOMENTUM][0] = True
    with pytest.raises(ValueError, match="out of place"):
        scoring.score_batch(batch, method, texts, equal=None)


def test_response_texts_decode_each_response_at_its_own_length():
    method = mgrpo()
    batch, _ = make_batch(POOLS, method)
    texts = scoring.response_texts(batch, lambda ids: ",".join(map(str, ids)))
    assert texts[0] == "0,1"  # row 0 of pool 0 has 2 response tokens
    assert texts[3] == f"{3 * WIDTH},{3 * WIDTH + 1},{3 * WIDTH + 2}"
