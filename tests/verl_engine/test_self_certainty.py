"""Intuitor's self-certainty from the logits of verl's old-log-prob pass (the worker's wrapper).

verl's FSDP engine cannot run here, so the wrapper is applied to a stand-in engine whose own
``prepare_model_outputs`` and packing helper behave like verl's for the shapes involved.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

import mgrpo.engines.verl.worker as worker
from mgrpo.algorithm.entropy import token_self_certainty


class Engine:
    """verl's FSDPEngineWithLMHead as far as the wrapper sees it."""

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        return {"entropy": "verl's own outputs stay"}

    def _gather_and_unpad_packed(self, tensor, pad_size):
        return tensor[:-pad_size] if pad_size else tensor


def micro_batch(lengths: list[int], flag: bool) -> TensorDict:
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    ids = torch.nested.nested_tensor_from_jagged(torch.arange(int(offsets[-1])), offsets)
    data = TensorDict({"input_ids": ids}, batch_size=[len(lengths)])
    tu.assign_non_tensor(data, **{worker.SELF_CERTAINTY_FLAG: flag})
    return data


@pytest.mark.parametrize("chunk", [2048, 3])
def test_packed_sequences_get_per_token_self_certainty(monkeypatch, chunk):
    monkeypatch.setattr(worker, "SELF_CERTAINTY_CHUNK", chunk)
    lengths, pad, vocab = [4, 2, 5], 3, 17
    logits = torch.randn(1, sum(lengths) + pad, vocab)
    temperature = torch.cat(
        [torch.full((n,), t) for n, t in zip(lengths, [1.1, 0.7, 1.0], strict=True)]
    )
    temperature = torch.cat([temperature, torch.ones(pad)])
    output = type("Out", (), {"logits": logits})()
    args = {"temperature_rmpad": temperature, "pad_size": pad}
    prepare = worker.with_self_certainty(Engine())
    result = prepare(output, args, micro_batch(lengths, True), None)
    assert result["entropy"] == "verl's own outputs stay"
    got = result["self_certainty"]
    assert got.offsets().tolist() == [0, 4, 6, 11]
    want = token_self_certainty(logits[0, :-pad] / temperature[:-pad, None])
    torch.testing.assert_close(got.values(), want)


def test_padded_rows_layout_and_no_flag():
    lengths, vocab = [3, 1], 11
    logits = torch.randn(2, 3, vocab)
    output = type("Out", (), {"logits": logits})()
    args = {"temperature": torch.tensor([2.0, 0.5])}
    prepare = worker.with_self_certainty(Engine())
    got = prepare(output, args, micro_batch(lengths, True), None)["self_certainty"]
    want = torch.cat(
        [token_self_certainty(logits[0] / 2.0), token_self_certainty(logits[1, :1] / 0.5)]
    )
    torch.testing.assert_close(got.values(), want)
    assert "self_certainty" not in prepare(output, args, micro_batch(lengths, False), None)


def test_fused_kernels_without_logits_are_refused():
    output = type("Out", (), {"logits": None})()
    prepare = worker.with_self_certainty(Engine())
    with pytest.raises(ValueError, match="use_fused_kernels=false"):
        prepare(output, {}, micro_batch([2], True), None)
