"""The seams of srl-agent, in one place: what generates, what scores, what acts, and where actions run.

Each seam is a Protocol (structural: an implementation needs no base class) with its contract here.
The trainer (`srl_agent.train`), the evaluator (`srl_agent.evaluate`) and the agent loop
(`srl_agent.agent`) depend on these, never on an implementation; only the factories that build one
(`srl_agent.generation.make_generator`, `srl_agent.policies.make_policy`) name the classes.

- `Generator`: batched sampling. For each tokenized prompt, `n` completions, each with its token ids,
  text, finish reason and the sampler's own per-token log-probabilities. It also says whether it
  samples from its own copy of the weights (`owns_weights`), which the trainer then hands it after
  every update (`update_weights`), and it frees its memory while the trainer updates (`sleep`,
  `wake`); a generator that samples from the policy itself does nothing in these. Implementations:
  `srl_agent.generation.hf.HFGenerator` (transformers `generate` on the policy) and
  `srl_agent.generation.vllm_engine.VLLMGenerator` (a vLLM engine with its own weights).
- `Reward`: scores one completion of one example, as a pure function of the two (step similarity,
  answer check); it returns a `Scored`, and a `Scored` with `masked` set means the reward could not be
  computed (the sandbox failed, not the policy): the sample is left out of advantages and loss instead
  of being counted as wrong. Implementations: `srl_agent.rewards`. The tests-pass reward of SWE RLVR
  is not a `Reward`: it scores a whole episode, not a completion, and its verdict is the patch's grade
  from `environments.episodes.run_graded`, the one grading path evaluation and check-experts use too
  (`swe_rlvr.outcome_score` turns that grade into a `Scored`). A `Reward` half that ran in an
  environment would have been a second way to grade the same patch, which nothing implemented; it is
  gone, so rewards and evaluation cannot disagree about a patch.
- `Environment`: where tool calls run (a repository in a sandbox). Its contract is owned by the
  `environments` package, which implements it (`environments.container.DockerEnvironment`) and uses
  it itself (tools, grading, replay); it is re-exported here so that the seams read together.
- `Policy`: what acts in an agent episode (`srl_agent.agent`), and what the evaluator calls on it.
  Given the step example the loop built from the episode so far, it returns one `Turn`: the whole
  output for that step; `check_instance` refuses, before any container starts, an instance it cannot
  act on; `episode()` is the context one episode runs in (concurrent episodes' turns batched).
  Implementations (`srl_agent.policies`, made by `make_policy`): `BatchedPolicy` around a
  `ModelPolicy` (a Generator behind the task's prompts), `ReplayPolicy` (recorded actions, for
  deterministic runs) and `srl_agent.remote.RemotePolicy` (a model behind an OpenAI-compatible chat
  API, `openai:MODEL@URL`: the same prompts as chat messages).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from environments.protocol import Environment

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from trajectories.record import StepExample

__all__ = [
    "Completion",
    "Environment",
    "FinishReason",
    "Generator",
    "Policy",
    "PolicyUnavailable",
    "PromptTooLong",
    "Reward",
    "Scored",
    "Turn",
]

FinishReason = Literal["stop", "length"]
"""`stop`: the model ended its turn (an end-of-turn token or a stop string); `length`: it hit the cap."""


@dataclass
class Completion:
    """One sampled completion.

    `token_ids` are what the policy wrote and trains on: the end-of-turn token included when the model
    stopped (so training also learns to stop), a stop string's tokens included when one ended it.
    `text` is the decoded completion without the end-of-turn token. `logprobs[i]` is the sampler's
    log-probability of `token_ids[i]` under the distribution it sampled from (after temperature and
    top-p), so the trainer can compare it with its own; `None` when the backend does not report them.
    """

    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    logprobs: list[float] | None = field(default=None, repr=False)

    @property
    def truncated(self) -> bool:
        """The completion hit `max_new_tokens` without ending its turn."""
        return self.finish_reason == "length"


class Generator(Protocol):
    owns_weights: bool
    """True: it samples from its own copy of the policy's weights (a vLLM engine), which the trainer
    hands it with `update_weights` after every update; False: it samples from the policy itself (HF),
    so the trainer's updates are what it samples from."""

    def generate(
        self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, greedy: bool = False
    ) -> list[list[Completion]]:
        """For each prompt (token ids, in order), `n` completions (`greedy`: one, temperature ignored).

        Stop strings and end-of-turn tokens are the implementation's settings, fixed when it is made.
        """
        ...

    def update_weights(self, model: PreTrainedModel) -> None:
        """Sample from `model`'s current weights from now on (copied in memory; a sleeping generator
        is woken). Nothing to do for a generator that does not own its weights."""
        ...

    def sleep(self) -> None:
        """Free what sampling holds (an engine's GPU memory) while the trainer updates; the next
        `wake` or `update_weights` restores it. May do nothing."""
        ...

    def wake(self) -> None:
        """Be ready to sample again after `sleep` (nothing to do when awake)."""
        ...


@dataclass(frozen=True)
class Scored:
    """One rollout's reward.

    `action` is the part of the output that was scored (None when there was none). `format_error`
    says why the output broke the output contract (the reward is then the task's penalty): the
    policy's fault. `masked` says why no reward could be computed at all (an infrastructure failure:
    a container died, the test run timed out on the harness side): nobody's verdict on the policy, so
    the trainer drops the sample rather than learning from a made-up reward.
    """

    reward: float
    action: str | None
    format_error: str | None = None
    masked: str | None = None


@runtime_checkable
class Reward(Protocol):
    """Scores `completion`, the policy's output for `example`: a pure function of the two. Never
    raises for a bad completion: that is a `format_error`."""

    def __call__(self, completion: str, example: StepExample) -> Scored: ...


@dataclass(frozen=True)
class Turn:
    """One turn of a policy in an agent episode.

    `text` is the whole output the output contract applies to (`<think>...</think>` and one tool call;
    a prompt prefill included). The token counts are 0 for a policy without a model.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = False
    """The output hit the completion cap before it ended its turn."""
    prompt_ids: list[int] | None = field(default=None, repr=False)
    """The token ids the model was given for this turn (template, context and prefill): None for a
    policy without a model. With `token_ids` and `logprobs` this is the turn as sampled, which RL
    trains on as it is, never re-tokenized."""
    token_ids: list[int] | None = field(default=None, repr=False)
    """The token ids the model wrote (`Completion.token_ids`)."""
    logprobs: list[float] | None = field(default=None, repr=False)
    """The sampler's log-probability of each of `token_ids` (None when it reports none)."""


class PromptTooLong(Exception):
    """The prompt for this step does not fit the policy's context (`tokens` > `limit`; `why`: the
    server's own words, for a model behind an API that refused the prompt)."""

    def __init__(self, tokens: int, limit: int, why: str | None = None) -> None:
        super().__init__(why or f"the prompt has {tokens} tokens, more than the {limit} the policy takes")
        self.tokens, self.limit = tokens, limit


class PolicyUnavailable(Exception):
    """The policy could not answer for a reason outside it: the server its model runs on failed (after
    its retries). An infrastructure fault, no verdict on the policy: the agent loop ends the episode
    with its infrastructure status and an evaluation redoes the instance on its next run."""


class Policy(Protocol):
    def act(self, example: StepExample) -> Turn:
        """The next turn for the episode whose next step `example` describes (its task and context, as
        the SRL step examples have them; `target` empty). Raises `PromptTooLong` when the prompt does
        not fit and `PolicyUnavailable` when its model's server failed; never raises for what the
        output holds (the loop checks the format).
        """
        ...

    def check_instance(self, instance_id: str) -> None:
        """Raise `policies.PolicyError`, saying why, when this policy cannot act on `instance_id` (a
        replay holding no trajectory of it); a model acts on anything. Cheap: called for every
        instance before any episode starts."""
        ...

    def episode(self) -> AbstractContextManager[Policy]:
        """`with policy.episode() as acting:` one episode, which calls `acting.act`, from before its
        container starts until it ends (a batching policy waits for the running episodes' turns)."""
        ...
