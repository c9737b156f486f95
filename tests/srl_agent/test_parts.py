"""The trainer's parts on the tiny model and real files: prompts, log-probs, data order, checkpoints."""

from __future__ import annotations

import torch
from srl_helpers import math_example

from srl_agent.checkpoint import find_checkpoint, save_checkpoint
from srl_agent.data import DataStream
from srl_agent.generation.hf import HFGenerator, StopRule, stop_cut
from srl_agent.logprobs import completion_logprobs, pack
from srl_agent.models import load_model_and_tokenizer
from srl_agent.prompts import (
    MATH_SYSTEM,
    SWE_SYSTEM,
    math_user_turn,
    messages,
    prompt_ids,
    sft_target,
    swe_user_turn,
)
from srl_agent.rewards import step_reward
from trajectories.record import ContextItem, StepExample


def swe_example() -> StepExample:
    call = "<function=bash>\n<parameter=command>ls</parameter>\n</function>"
    context = [ContextItem(call, "a.py")]
    return StepExample(
        "swe", "t", 5, 9, "Fix the bug in parse().", context, "<function=submit>\n</function>", 4
    )


def test_swe_prompt_documents_the_tools_and_shows_the_window():
    for needle in (
        "bash",
        "str_replace_editor",
        "submit",
        "<function=bash>",
        "<parameter=command>",
        "view_range",
        "insert_line",
        "<think>",
        "</think>",
    ):
        assert needle in SWE_SYSTEM
    text = swe_user_turn(swe_example())
    assert "<issue>\nFix the bug in parse().\n</issue>" in text
    assert "(4 earlier steps are not shown.)" in text
    assert "Step 5:\n<function=bash>" in text and "Observation:\na.py" in text


def test_math_prompt_has_context_and_optional_hint():
    ex = math_example("g", 2, "3. **Add** 5")
    ex.hint = "Add"
    text = math_user_turn(ex)
    assert text.startswith("Problem:\nqg") and "1. s\n\n2. s" in text and 'titled "Add"' in text
    assert "no steps yet" in math_user_turn(math_example("g", 0, "x"))


def test_prompts_go_through_the_chat_template():
    _, tokenizer = load_model_and_tokenizer("tiny-random")
    ids = prompt_ids(tokenizer, messages(math_example("g", 1, "x"), MATH_SYSTEM, math_user_turn))
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


def test_sft_target_keeps_the_output_contract():
    assert step_reward(sft_target("x = 5"), "x = 5", "math").reward == 1.0


def test_packed_logprobs_match_unpadded_forward():
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    prompts = [[1, 40, 41, 42, 43, 44], [1, 50]]
    completions = [[60, 61], [70, 71, 72, 2]]
    batch = pack(prompts, completions, tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        packed = completion_logprobs(model, batch)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            logits = model(torch.tensor([p + c])).logits[0].log_softmax(-1)
            alone = torch.stack([logits[len(p) - 1 + j, t] for j, t in enumerate(c)])
            assert torch.allclose(packed[i, : len(c)], alone, atol=1e-5)
    assert batch["mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_generator_returns_n_completions_with_stop_token_kept():
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    torch.manual_seed(0)
    out = HFGenerator(model, tokenizer, batch_size=8).generate([[1, 40, 41], [1, 50]], 3, 10, 1.0)
    assert [len(o) for o in out] == [3, 3]
    for c in out[0] + out[1]:
        assert 1 <= len(c.token_ids) <= 10
        if not c.truncated and len(c.token_ids) < 10:
            assert c.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_stop_string_cut_finds_the_shortest_prefix_across_tokens():
    _, tokenizer = load_model_and_tokenizer("tiny-random")

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # The char-level tokenizer spells `</function>` in 11 tokens; padding after it is cut off too.
    call = "<function=submit>\n</function>"
    padded = ids(call + "\nmore") + [tokenizer.pad_token_id] * 3
    assert stop_cut(tokenizer, padded, StopRule(("</function>",))) == len(ids(call))
    assert stop_cut(tokenizer, ids("ab</funct"), StopRule(("</function>",))) is None
    assert stop_cut(tokenizer, ids("xyz"), StopRule(("y", "z"))) == 2
    assert stop_cut(tokenizer, ids("xyz"), StopRule()) is None
    # a math step ends once the next step shows: the marker's tokens are in the cut, not in the text
    step = StopRule(step_end=True, prefill="<think>\n</think>\n")
    text = "3. **Add** 2 + 2 = 4.\n4. **Next** more"
    assert stop_cut(tokenizer, ids(text), step) == len(ids("3. **Add** 2 + 2 = 4.\n4. **"))
    assert step.find(text) == (len("3. **Add** 2 + 2 = 4."), len("3. **Add** 2 + 2 = 4.\n4. **"))


def test_step_end_rule_reads_the_action_after_think_only():
    rule = StopRule(step_end=True)
    # line breaks inside the monologue never end the step; the action's first line break does
    assert rule.find("<think>\nfirst\nsecond\n</think>\n") is None
    done = "<think>\na\nb\n</think>\nShe has 9 eggs.\nThen"
    assert rule.find(done) == (done.index(" eggs.") + 6, done.index(" eggs.") + 7)
    # with the monologue prefilled, the completion is the action alone
    prefilled = StopRule(step_end=True, prefill="<think>\n</think>\n")
    assert prefilled.find("She has 9 eggs.\nThen") == (15, 16)
    assert prefilled.find("\n\n") is None  # no step text yet
    # stop strings and the step end together: whichever shows first
    both = StopRule(("!",), step_end=True, prefill="</think>")
    assert both.find("a!\nb") == (2, 2) and both.find("a\nb!") == (1, 2)


def test_generator_reports_the_samplers_logprobs():
    """Each completion carries one log-prob per token: the sampling distribution's (temperature
    applied), which a float32 forward pass of the same model reproduces."""
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    torch.manual_seed(0)
    prompts = [[1, 40, 41], [1, 50]]
    out = HFGenerator(model, tokenizer, batch_size=8).generate(prompts, 2, 12, 0.7)
    for prompt, group in zip(prompts, out, strict=True):
        for c in group:
            assert c.finish_reason in ("stop", "length") and len(c.logprobs) == len(c.token_ids)
            batch = pack([prompt], [c.token_ids], tokenizer.pad_token_id, "cpu")
            with torch.no_grad():
                trainer = completion_logprobs(model, batch, temperature=0.7)[0, : len(c.token_ids)]
            assert torch.allclose(trainer, torch.tensor(c.logprobs), atol=1e-4)
    greedy = HFGenerator(model, tokenizer).generate(prompts[:1], 4, 6, 1.0, greedy=True)[0]
    assert len(greedy) == 1 and all(lp <= 0.0 for lp in greedy[0].logprobs)


def test_generator_ends_completions_at_a_stop_string():
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    stops = list("abcdefghijklm")  # a random model writes one of these within a few tokens
    torch.manual_seed(0)
    rule = StopRule(tuple(stops))
    out = HFGenerator(model, tokenizer, batch_size=8, stop=rule).generate([[1, 40, 41], [1, 50]], 4, 24, 1.0)
    ended_by_string = 0
    for c in out[0] + out[1]:
        raw = tokenizer.decode(c.token_ids, skip_special_tokens=False)
        if any(s in raw for s in stops):
            ended_by_string += 1
            assert not c.truncated
            # it ends at the token that completed the first stop string: nothing after it, no padding
            assert stop_cut(tokenizer, c.token_ids, StopRule(tuple(stops))) == len(c.token_ids)
        else:
            assert c.truncated or c.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
            assert tokenizer.pad_token_id not in c.token_ids
    assert ended_by_string >= 4


def test_data_stream_is_seeded_and_restorable():
    examples = [math_example(f"g{i}", 0, "x") for i in range(5)]
    a = DataStream(examples, seed=3)
    first = [e.group_id for e in a.take(7)]
    assert sorted(first[:5]) == [f"g{i}" for i in range(5)]  # one epoch is a permutation
    b = DataStream(examples, seed=3)
    b.restore(a.state())
    assert [e.group_id for e in a.take(6)] == [e.group_id for e in b.take(6)]


def test_checkpoint_is_replaced_atomically(tmp_path):
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    folder = tmp_path / "last"
    save_checkpoint(folder, model, tokenizer, {"x": 1}, {"step": 1})
    save_checkpoint(folder, model, tokenizer, {"x": 2}, {"step": 2})
    assert find_checkpoint(folder) == folder and not folder.with_name("last.old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # a kill between the two renames leaves only the aside copy: it is found and used
    folder.rename(folder.with_name("last.old"))
    assert find_checkpoint(folder) == folder.with_name("last.old")
    save_checkpoint(folder, model, tokenizer, {"x": 3}, {"step": 3})
    assert find_checkpoint(folder) == folder and not folder.with_name("last.old").exists()


def test_generator_ends_completions_where_the_step_ends():
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    rule = StopRule(step_end=True, prefill="</think>")
    torch.manual_seed(0)
    # the char-level tiny model writes line breaks now and then: each row stops at its step's end
    out = HFGenerator(model, tokenizer, batch_size=8, stop=rule).generate([[1, 40, 41], [1, 50]], 8, 40, 1.0)
    ended = 0
    for c in out[0] + out[1]:
        raw = tokenizer.decode(c.token_ids, skip_special_tokens=False)
        if rule.find(raw) is not None:
            ended += 1
            assert not c.truncated and c.finish_reason == "stop"
            assert stop_cut(tokenizer, c.token_ids, rule) == len(c.token_ids)  # nothing after the marker
            assert "\n" not in c.text.lstrip() and len(c.logprobs) == len(c.token_ids)
        else:
            assert c.truncated or c.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ended >= 2


def test_shared_prompts_give_the_plain_layouts_logprobs_and_gradient():
    """A prompt repeated in a micro-batch runs once, its KV cache indexed out to its rows: the
    log-probs and the gradient are those of running every row in full."""
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    prompts = [[1, 40, 41, 42, 43, 44]] * 3 + [[1, 50]] * 2 + [[1, 60, 61]]
    completions = [[60, 61], [70, 71, 72, 2], [80], [90, 91, 92], [93], [94, 95]]
    plain = pack(prompts, completions, tokenizer.pad_token_id, "cpu")
    shared = pack(prompts, completions, tokenizer.pad_token_id, "cpu", share_prompts=True)
    assert "rows" in shared and shared["prompt_ids"].shape[0] == 3
    assert shared["rows"].tolist() == [0, 0, 0, 1, 1, 2]
    assert torch.equal(shared["mask"], plain["mask"])
    weights = torch.randn(plain["mask"].shape)
    results = []
    for batch in (plain, shared):
        model.zero_grad(set_to_none=True)
        logp = completion_logprobs(model, batch, temperature=0.7)
        (logp * weights * batch["mask"]).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logp.detach() * batch["mask"], grads))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)
    assert results[0][1].abs().sum() > 0
    # distinct prompts keep the plain layout, unless asked for the shared one always (sharded ranks)
    assert "rows" not in pack(prompts[2:4], completions[2:4], 0, "cpu", share_prompts=True)
    assert "rows" in pack(prompts[2:4], completions[2:4], 0, "cpu", share_prompts="always")
    # one-token completions: the shared layout pads them to two columns (a completion pass always runs)
    one = pack([[1, 40]] * 2, [[7], [8]], 0, "cpu", share_prompts=True)
    with torch.no_grad():
        assert one["mask"].tolist() == [[1, 0], [1, 0]]
        plain_one = completion_logprobs(model, pack([[1, 40]] * 2, [[7], [8]], 0, "cpu"))
        assert torch.allclose(completion_logprobs(model, one)[:, :1], plain_one, atol=1e-6)
