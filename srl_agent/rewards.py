"""Rewards, as pure functions: the format check, the step-wise similarity reward and outcome rewards.

The output contract (both tasks): `<think> free inner monologue </think>` followed by the action.
- The action is the text after the closing `</think>`. The output must hold exactly one `<think>` and
  one `</think>`, in that order, with nothing but whitespace before `<think>` (unless
  `allow_preamble`), and a non-empty action. Anything else is a format error, reward -1.
- SWE: the action must be exactly one parseable tool call with every argument its tool requires
  (`trajectories.actions.parse_complete_action`: SWE-agent's parser refuses `<function=bash></function>`
  too); it is compared in its rendered canonical form, so formatting differences the parser forgives do
  not cost reward.
- Similarity r = 2M/T in [0, 1]: `difflib` (the paper's `SequenceMatcher.ratio()`) or `rapidfuzz`
  (exact longest-common-subsequence 2M/T, far faster on long actions). Only the action is scored.
- Outcome (RLVR, math): 1.0 when math-verify finds the action's final answer equivalent to the gold
  answer, else 0.0 (a format error is 0.0 too: the rollout is simply wrong). The check is
  `srl_agent.eval.math_grading`'s, which imports math-verify only when an outcome reward is asked for.

`StepSimilarityReward` and `MathAnswerReward` wrap these functions behind the `Reward` Protocol
(`srl_agent.protocols`): configured once, then called per completion. Which one a task and stage use
is the task spec's choice (`srl_agent.tasks`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rapidfuzz.distance import Indel

from srl_agent.protocols import Scored
from trajectories.actions import ActionParseError, parse_complete_action, render_action

if TYPE_CHECKING:
    from srl_agent.config import RewardConfig
    from trajectories.record import StepExample

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
FORMAT_PENALTY = -1.0


def extract_action(completion: str, allow_preamble: bool = False) -> tuple[str | None, str | None]:
    """(action, None) for an output that keeps the contract, else (None, why)."""
    if completion.count(THINK_OPEN) != 1 or completion.count(THINK_CLOSE) != 1:
        return None, f"expected one {THINK_OPEN} and one {THINK_CLOSE}"
    start, end = completion.index(THINK_OPEN), completion.index(THINK_CLOSE)
    if end < start:
        return None, f"{THINK_CLOSE} before {THINK_OPEN}"
    if not allow_preamble and completion[:start].strip():
        return None, f"text before {THINK_OPEN}"
    action = completion[end + len(THINK_CLOSE) :]
    if not action.strip():
        return None, f"no action after {THINK_CLOSE}"
    return action, None


def difflib_similarity(a: str, b: str, autojunk: bool = False) -> float:
    """`difflib.SequenceMatcher(None, a, b, autojunk=autojunk).ratio()`: 2M/T with M from matching blocks."""
    return difflib.SequenceMatcher(None, a, b, autojunk=autojunk).ratio()


def lcs_similarity(a: str, b: str, autojunk: bool = False) -> float:
    """Exact 2*LCS/(len(a)+len(b)) (rapidfuzz Indel normalized similarity); `autojunk` is ignored."""
    if not a and not b:
        return 1.0  # the same convention as SequenceMatcher.ratio()
    return Indel.normalized_similarity(a, b)


SIMILARITIES: dict[str, Callable[[str, str, bool], float]] = {
    "difflib": difflib_similarity,
    "rapidfuzz": lcs_similarity,
}


def step_reward(
    completion: str,
    target: str,
    kind: str,
    similarity: str = "difflib",
    autojunk: bool = False,
    strip: bool = True,
    allow_preamble: bool = False,
) -> Scored:
    """The SRL reward of one rollout against the expert's next action (`kind` is `math` or `swe`)."""
    action, error = extract_action(completion, allow_preamble)
    if action is None:
        return Scored(FORMAT_PENALTY, None, error)
    if kind == "swe":
        try:
            action = render_action(parse_complete_action(action))
        except (ActionParseError, ValueError) as e:
            return Scored(FORMAT_PENALTY, None, f"not one canonical tool call: {e}")
    if strip:
        action, target = action.strip(), target.strip()
    return Scored(SIMILARITIES[similarity](action, target, autojunk), action)


def math_outcome_reward(completion: str, answer: str | None, allow_preamble: bool = False) -> Scored:
    """1.0 when the action's final answer is equivalent to `answer` (math-verify), else 0.0."""
    action, error = extract_action(completion, allow_preamble)
    if action is None:
        return Scored(0.0, None, error)
    if answer is None:
        raise ValueError("math outcome reward needs the gold answer; this example has none")
    from srl_agent.eval.math_grading import response_matches

    try:
        correct = response_matches(answer, action)
    except Exception:  # noqa: BLE001 - math-verify raises on unparseable answers; that is a wrong answer
        correct = False
    return Scored(1.0 if correct else 0.0, action)


@dataclass(frozen=True)
class StepSimilarityReward:
    """The SRL reward (`step_reward`) against the example's expert step, configured once.

    `prefill` (the prompt's opening of the assistant turn) is put back in front of the completion, so
    the format check sees the whole output.
    """

    similarity: str
    autojunk: bool = False
    strip: bool = True
    allow_preamble: bool = False
    prefill: str = ""

    @classmethod
    def from_config(cls, cfg: RewardConfig, prefill: str = "") -> StepSimilarityReward:
        return cls(cfg.similarity, cfg.autojunk, cfg.strip, cfg.allow_preamble, prefill)

    def __call__(self, completion: str, example: StepExample) -> Scored:
        return step_reward(
            self.prefill + completion,
            example.target,
            example.kind,
            self.similarity,
            self.autojunk,
            self.strip,
            self.allow_preamble,
        )


@dataclass(frozen=True)
class MathAnswerReward:
    """The math outcome reward (`math_outcome_reward`) against the example's gold answer."""

    allow_preamble: bool = False
    prefill: str = ""

    @classmethod
    def from_config(cls, cfg: RewardConfig, prefill: str = "") -> MathAnswerReward:
        return cls(cfg.allow_preamble, prefill)

    def __call__(self, completion: str, example: StepExample) -> Scored:
        return math_outcome_reward(self.prefill + completion, example.answer, self.allow_preamble)
