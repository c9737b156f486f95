"""HF generation with a shared prefill: the `n` completions of a prompt prefill it once, and give what
`generate`'s own expansion (`num_return_sequences=n`, `share_prefill=False`) gives.

Greedy generation asks for one completion per prompt, so greedy copies are drawn here with `top_k=1`:
sampling from the arg-max alone. Sampled runs draw from the same random stream in both ways (the
prefill draws nothing), so with one seed they are compared token for token too.
"""

from __future__ import annotations

import math

import pytest
import torch

from srl_agent.generation.hf import HFGenerator, StopRule
from srl_agent.models import load_model_and_tokenizer
from srl_agent.protocols import Completion

# different lengths, so the chunk is left-padded; a one-token prompt has nothing to prefill
PROMPTS = [[1, 40, 41, 42, 43, 44, 45, 46, 47], [1, 72, 94, 81, 22, 43], [1, 50], [7]]


def both_ways(model, tokenizer, seed: int, n: int, temperature: float, **kwargs):
    """The completions of PROMPTS with and without a shared prefill, from the same seed."""
    out = {}
    for share in (False, True):
        torch.manual_seed(seed)
        generator = HFGenerator(model, tokenizer, share_prefill=share, **kwargs)
        out[share] = generator.generate(PROMPTS, n, 24, temperature)
    return out[False], out[True]


def assert_same(old: list[list[Completion]], new: list[list[Completion]], n: int) -> None:
    assert [len(g) for g in new] == [n] * len(PROMPTS)
    for group_old, group_new in zip(old, new, strict=True):
        for a, b in zip(group_old, group_new, strict=True):
            assert (b.token_ids, b.text, b.finish_reason) == (a.token_ids, a.text, a.finish_reason)
            assert b.finish_reason in ("stop", "length") and len(b.logprobs) == len(b.token_ids)
            assert all(math.isfinite(x) and x <= 0.0 for x in b.logprobs)
            assert torch.allclose(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=1e-5)


@pytest.mark.parametrize("batch_size", [12, 6])  # every prompt in one call; two prompts per call
def test_shared_prefill_gives_the_same_greedy_copies(batch_size):
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    # the tiny model repeats a character: the second prompt's completion reaches the two-token
    # stop string after 13 tokens, the others run to the length limit
    stop = StopRule(("E@",))
    old, new = both_ways(model, tokenizer, 0, 3, 1.0, batch_size=batch_size, top_k=1, stop=stop)
    assert_same(old, new, 3)
    for group in new:  # greedy: the copies agree
        assert len({tuple(c.token_ids) for c in group}) == 1
    assert [(g[0].text, g[0].finish_reason) for g in new] == [
        ("I" * 24, "length"),
        ("E" * 13 + "@", "stop"),
        ("L" * 24, "length"),
        ("!" * 24, "length"),
    ]


def test_shared_prefill_gives_the_same_samples_from_a_seed():
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    stop = StopRule(("q",), step_end=True, prefill="</think>")  # stop strings and the step end's criterion
    old, new = both_ways(model, tokenizer, 3, 3, 0.7, batch_size=6, top_p=0.95, stop=stop)
    assert_same(old, new, 3)
    assert any(len({tuple(c.token_ids) for c in group}) > 1 for group in new)  # really sampled


def test_shared_prefill_runs_each_prompt_once():
    """Prompt tokens the model is run on: each prompt once, then the n copies' last tokens."""
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    widths: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        widths.append(tuple(ids.shape))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for share in (False, True):
            widths.clear()
            HFGenerator(model, tokenizer, share_prefill=share).generate(PROMPTS, 3, 4, 1.0)
            first = widths[:2] if share else widths[:1]
            assert first == ([(4, 8), (12, 1)] if share else [(12, 9)])
    finally:
        handle.remove()


@pytest.mark.slow
def test_shared_prefill_gives_the_same_greedy_copies_on_smollm2():
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    text = "def parse(line):\n    return line.split(',')\n" * 12
    prompts = [tokenizer(text + "# fix the bug", add_special_tokens=False)["input_ids"], [1, 2, 3, 4]]
    out = {}
    for share in (False, True):
        torch.manual_seed(0)
        generator = HFGenerator(model, tokenizer, top_k=1, share_prefill=share)
        out[share] = generator.generate(prompts, 2, 16, 1.0)
    for group_old, group_new in zip(out[False], out[True], strict=True):
        for a, b in zip(group_old, group_new, strict=True):
            assert (b.token_ids, b.finish_reason) == (a.token_ids, a.finish_reason)
