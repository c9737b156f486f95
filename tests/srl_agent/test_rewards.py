"""Rewards on hand-computed values: the format check, both similarities, SWE canonical form, outcome."""

from __future__ import annotations

import difflib

import pytest

from srl_agent.rewards import (
    FORMAT_PENALTY,
    difflib_similarity,
    extract_action,
    lcs_similarity,
    math_outcome_reward,
    step_reward,
)

BASH = "<function=bash>\n<parameter=command>ls /testbed</parameter>\n</function>"


def test_action_is_the_text_after_think():
    assert extract_action("<think>hmm</think>\n2. **Divide** x = 5") == ("\n2. **Divide** x = 5", None)
    assert extract_action("  \n<think>\n</think>x")[0] == "x"


@pytest.mark.parametrize(
    "completion",
    [
        "no think at all",
        "<think>never closed",
        "</think> closed first <think>",
        "<think>a</think>",  # empty action
        "<think>a</think>   \n",  # whitespace-only action
        "<think>a</think> x <think>b</think> y",  # two monologues
        "preamble <think>a</think> x",  # text before <think>
        "",
    ],
)
def test_broken_outputs_get_minus_one(completion):
    for kind in ("math", "swe"):
        scored = step_reward(completion, "x = 5", kind)
        assert scored.reward == FORMAT_PENALTY == -1.0
        assert scored.format_error


def test_preamble_allowed_when_configured():
    assert step_reward("Sure! <think>a</think> x = 5", "x = 5", "math", allow_preamble=True).reward == 1.0


def test_similarity_is_two_m_over_t():
    # "abcd" vs "abxd": M = 3 ("ab" + "d"), T = 8 -> 0.75, for both implementations.
    assert difflib_similarity("abcd", "abxd") == pytest.approx(0.75)
    assert lcs_similarity("abcd", "abxd") == pytest.approx(0.75)
    assert lcs_similarity("", "") == 1.0 == difflib_similarity("", "")
    assert lcs_similarity("abc", "") == 0.0


def test_difflib_is_the_paper_call_and_autojunk_matters_on_long_text():
    a = "The sum of the first n odd numbers is n squared; with n = 12 the total is 144. " * 3
    b = a.replace("144", "145").replace("squared", "sqared")
    assert difflib_similarity(a, b, autojunk=True) == difflib.SequenceMatcher(None, a, b).ratio()
    assert difflib_similarity(a, b, autojunk=False) > difflib_similarity(a, b, autojunk=True)
    # the exact LCS is an upper bound of difflib's greedy matching blocks
    assert lcs_similarity(a, b) >= difflib_similarity(a, b, autojunk=False) - 1e-12


def test_math_step_reward_scores_only_the_action():
    target = "2. **Divide by 3** x = 5"
    exact = step_reward("<think>anything at all, long or short</think>\n" + target + "\n", target, "math")
    assert exact.reward == 1.0 and exact.format_error is None
    partial = step_reward("<think></think>2. **Divide by 3** x = 6", target, "math", similarity="rapidfuzz")
    assert partial.reward == pytest.approx(2 * 23 / 48)


def test_swe_action_must_be_one_canonical_call():
    ok = step_reward(f"<think>look around</think>\n{BASH}", BASH, "swe")
    assert ok.reward == 1.0
    # parameter values are compared in the rendered canonical form
    spaced = "<function=bash>\n  <parameter=command>ls /testbed</parameter>\n</function>"
    assert step_reward(f"<think>x</think>{spaced}", BASH, "swe").reward == 1.0
    for bad in (
        "ls /testbed",
        f"{BASH}\n{BASH}",
        f"I will run: {BASH}",
        "<function=bash>\n<parameter=command>ls",
        "<function=bash>\n</function>",  # no command: a call SWE-agent's parser refuses
        "<function=str_replace_editor>\n<parameter=command>view</parameter>\n</function>",  # no path
    ):
        scored = step_reward(f"<think>x</think>{bad}", BASH, "swe")
        assert scored.reward == -1.0, bad
        assert "canonical tool call" in scored.format_error


def test_swe_similarity_of_a_different_command():
    other = "<function=bash>\n<parameter=command>ls /tmp</parameter>\n</function>"
    scored = step_reward(f"<think>x</think>{other}", BASH, "swe", similarity="rapidfuzz")
    assert 0.8 < scored.reward < 1.0
    assert scored.reward == pytest.approx(lcs_similarity(other, BASH))


def test_math_outcome_reward():
    assert math_outcome_reward("<think>x</think> so x = \\boxed{5}", "5").reward == 1.0
    assert math_outcome_reward("<think>x</think> the answer is \\boxed{\\frac{1}{2}}", "0.5").reward == 1.0
    assert math_outcome_reward("<think>x</think> \\boxed{6}", "5").reward == 0.0
    broken = math_outcome_reward("\\boxed{5}", "5")
    assert broken.reward == 0.0 and broken.format_error
