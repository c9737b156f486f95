"""The agent loop: a policy acts in a repository environment, one tool call per turn, until it submits.

    from environments.container import DockerEnvironment
    from environments.tasks.bundled import get_task
    from srl_agent.agent import run_episode, save_episode
    from srl_agent.policies import make_policy

    task = get_task("srl-agent__paginate-1")  # its image comes from `python -m environments build`
    policy = make_policy(f"replay:{task.expert_trajectory}")
    with DockerEnvironment(task.image) as env:
        episode = run_episode(policy, env, task.problem_statement, task.instance_id)
    episode.exit_status, episode.patch, episode.stats()
    save_episode(episode, "runs/episodes/paginate.jsonl")  # `python -m trajectories inspect` reads it

A turn:
1. The prompt is the SRL step example for the next step, made from the episode so far by the builder
   that makes the training examples (`trajectories.build.next_swe_example`: the issue, the last
   `context_steps` action/observation pairs, each observation capped with the visible marker), so
   the policy acts in the format it was trained on; the policy renders it with its task's prompts.
2. The policy writes `<think>...</think>` and one tool call. The loop checks it against the reward's
   output contract (`rewards.extract_action`, then `actions.parse_complete_action`).
3. A valid call runs in the environment (`environments.tools`) and becomes a step of the episode's
   trajectory, with its observation. A format error runs nothing: the policy is asked again for the
   same step, with its failed output and an observation saying what was wrong and what a call looks
   like shown as one more context item, as an agent harness re-queries. The trajectory keeps only
   the valid steps, as the readers keep expert trajectories (`meta["format_error_turns"]` counts the
   rest), so an episode builds into step examples like expert data does.

An episode ends with one `ExitStatus`: `submitted` (the patch is what submit returned),
`step_limit`, `context_limit` (the next prompt does not fit the policy), `format_errors` (that many in
a row), `time_limit` (wall clock, checked before each turn; a command is bounded by its own timeout)
or `environment_error`: the container or the engine failed, or the server of the policy's model did
(`PolicyUnavailable`, after the client's retries), an infrastructure fault that says nothing about
the policy (`INFRASTRUCTURE_STATUSES`; an evaluation must not count it as unresolved, and redoes it).
Except after an environment error, the patch is the repository's diff at the end.

The saved episode is a `trajectories.record.Trajectory`: `final_patch`, `exit_status`, and in `meta`
the per-turn costs (`turns`: tokens, generation and environment seconds, the format error and the
output of a failed turn) and their totals (`episode`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args

from environments import tools
from srl_agent.config import AgentConfig
from srl_agent.protocols import PolicyUnavailable, PromptTooLong
from srl_agent.rewards import THINK_CLOSE, THINK_OPEN, extract_action
from trajectories.actions import ActionParseError, parse_complete_action, render_action
from trajectories.build import BuildConfig, next_swe_example, truncate_middle
from trajectories.record import ContextItem, Step, StepExample, ToolCall, Trajectory, write_jsonl

if TYPE_CHECKING:
    from srl_agent.protocols import Environment, Policy, Turn

log = logging.getLogger(__name__)

ExitStatus = Literal[
    "submitted", "step_limit", "context_limit", "format_errors", "time_limit", "environment_error"
]
EXIT_STATUSES: tuple[ExitStatus, ...] = get_args(ExitStatus)
INFRASTRUCTURE_STATUSES = frozenset({"environment_error"})
"""Statuses that are no verdict on the policy: an evaluation reports them apart."""

_EXAMPLE_CALL = render_action(ToolCall("bash", {"command": "ls /testbed"}))
EXAMPLE_OUTPUT = f"{THINK_OPEN}\nFirst I look at the repository's layout.\n{THINK_CLOSE}\n{_EXAMPLE_CALL}"
"""The output a format-error observation shows: one that keeps the contract."""


@dataclass
class TurnRecord:
    """One policy call: what it cost and what became of it (`step`: its index in the trajectory's
    steps; None for a format error, whose `output` is kept since no step holds it)."""

    prompt_tokens: int
    completion_tokens: int
    generation_seconds: float
    environment_seconds: float = 0.0
    step: int | None = None
    format_error: str | None = None
    output: str | None = None
    truncated: bool = False


@dataclass
class Episode:
    """One finished episode: the trajectory that is saved, and its turns."""

    trajectory: Trajectory
    turns: list[TurnRecord] = field(default_factory=list)
    detail: str = ""
    """Why the episode ended, in words (the limit, the failure)."""
    seconds: float = 0.0
    outputs: list[Turn] = field(default_factory=list, repr=False)
    """Every turn as the policy returned it, format errors included, in order (not saved): with a
    model policy each holds its prompt and completion token ids as sampled, what RL trains on."""

    @property
    def exit_status(self) -> ExitStatus:
        return self.trajectory.exit_status  # type: ignore[return-value]

    @property
    def patch(self) -> str | None:
        """The submitted patch or the final diff; None after an environment error."""
        return self.trajectory.final_patch

    @property
    def infrastructure_error(self) -> bool:
        return self.exit_status in INFRASTRUCTURE_STATUSES

    def stats(self) -> dict[str, Any]:
        """Totals over the turns, with the exit status: what an evaluation report aggregates."""
        return {
            "exit_status": self.exit_status,
            "detail": self.detail,
            "steps": len(self.trajectory.steps),
            "turns": len(self.turns),
            "format_errors": sum(t.format_error is not None for t in self.turns),
            "prompt_tokens": sum(t.prompt_tokens for t in self.turns),
            "completion_tokens": sum(t.completion_tokens for t in self.turns),
            "generation_seconds": round(sum(t.generation_seconds for t in self.turns), 3),
            "environment_seconds": round(sum(t.environment_seconds for t in self.turns), 3),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_trajectory(cls, trajectory: Trajectory) -> Episode:
        """The episode a saved trajectory records (`save_episode`, read back by `trajectories`)."""
        totals = trajectory.meta.get("episode", {})
        turns = [TurnRecord(**t) for t in trajectory.meta.get("turns", [])]
        return cls(trajectory, turns, totals.get("detail", ""), totals.get("seconds", 0.0))


class EpisodeEnd(Exception):
    """Ends the loop with `status`; `patch` is set when the end brings one (a submit)."""

    def __init__(self, status: ExitStatus, detail: str, patch: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.patch = status, detail, patch


def run_episode(
    policy: Policy,
    env: Environment,
    issue: str,
    instance_id: str | None = None,
    cfg: AgentConfig | None = None,
    build: BuildConfig | None = None,
) -> Episode:
    """Let `policy` act on `issue` in `env` (started, at the base commit) until the episode ends. The
    policy sees the issue through `cfg.instance_template`, as the experts it learned from saw theirs.

    `build` is the prompt's context window and observation cap (a run's `data.build`). Never raises for
    the policy's output or the environment's faults (they are exit statuses); errors of the policy
    itself (a replay policy without a trajectory for `instance_id`) propagate.
    """
    cfg, build = cfg or AgentConfig(), build or BuildConfig()
    task = cfg.instance_template.replace("{problem_statement}", issue)
    trajectory = Trajectory(task=task, steps=[], instance_id=instance_id)
    turns: list[TurnRecord] = []
    outputs: list[Turn] = []
    started = time.monotonic()
    try:
        _act(policy, env, trajectory, turns, outputs, cfg, build, started)
    except EpisodeEnd as e:
        end = e
    if end.patch is None and end.status not in INFRASTRUCTURE_STATUSES:
        try:
            end.patch = env.diff()
        except Exception as e:  # whatever failed, it is the environment's fault, not the policy's
            log.warning("the final diff failed in an episode of %s", instance_id, exc_info=True)
            end = EpisodeEnd("environment_error", f"the final diff failed: {type(e).__name__}: {e}")
    trajectory.final_patch, trajectory.exit_status = end.patch, end.status
    episode = Episode(trajectory, turns, end.detail, time.monotonic() - started, outputs)
    window = {"context_steps": build.context_steps, "observation_max_chars": build.observation_max_chars}
    trajectory.meta.update(
        format_error_turns=sum(t.format_error is not None for t in turns),
        episode={**episode.stats(), **window},
        turns=[asdict(t) for t in turns],
    )
    log.info("episode of %s: %s after %d turns (%s)", instance_id, end.status, len(turns), end.detail)
    return episode


def _act(
    policy: Policy,
    env: Environment,
    trajectory: Trajectory,
    turns: list[TurnRecord],
    outputs: list[Turn],
    cfg: AgentConfig,
    build: BuildConfig,
    started: float,
) -> NoReturn:
    """Take turns until one ends the episode; every way out is an `EpisodeEnd`."""
    retry: ContextItem | None = None  # the failed output of this step, shown when asking again
    errors_in_a_row = 0
    while True:
        if cfg.time_limit is not None and time.monotonic() - started >= cfg.time_limit:
            raise EpisodeEnd("time_limit", f"the time limit of {cfg.time_limit:g} s passed")
        if len(turns) >= cfg.max_steps:
            raise EpisodeEnd("step_limit", f"{cfg.max_steps} turns without a submit")
        clock = time.monotonic()
        try:
            turn = policy.act(next_example(trajectory, build, retry))
        except PromptTooLong as e:
            raise EpisodeEnd("context_limit", str(e)) from None
        except PolicyUnavailable as e:  # the model's server failed: no verdict on the policy
            log.warning("the policy's server failed in an episode of %s: %s", trajectory.instance_id, e)
            raise EpisodeEnd("environment_error", f"the policy's server failed: {e}") from None
        record = TurnRecord(
            turn.prompt_tokens, turn.completion_tokens, time.monotonic() - clock, truncated=turn.truncated
        )
        turns.append(record)
        outputs.append(turn)
        parsed = parse_turn(turn)
        if isinstance(parsed, str):
            record.format_error, record.output = parsed, turn.text
            retry = failed_attempt(turn, parsed, build)
            errors_in_a_row += 1
            if errors_in_a_row >= cfg.max_format_errors:
                raise EpisodeEnd(
                    "format_errors", f"{errors_in_a_row} format errors in a row, the last: {parsed}"
                )
            continue
        thought, call = parsed
        retry, errors_in_a_row = None, 0
        clock = time.monotonic()
        try:
            outcome = tools.execute(env, call)  # the environment's command_timeout
        except Exception as e:  # the tools make the agent's faults observations: this is the sandbox's
            log.warning("the environment failed in an episode of %s", trajectory.instance_id, exc_info=True)
            raise EpisodeEnd("environment_error", f"{call.name} failed: {type(e).__name__}: {e}") from e
        record.environment_seconds, record.step = time.monotonic() - clock, len(trajectory.steps)
        trajectory.steps.append(Step(thought=thought, action=call, observation=outcome.observation))
        if outcome.submitted:
            raise EpisodeEnd("submitted", "the policy submitted", outcome.patch or "")


def next_example(trajectory: Trajectory, build: BuildConfig, retry: ContextItem | None = None) -> StepExample:
    """The step example the policy acts on next: the SRL builder's for the episode so far, plus the
    failed attempt at this step (`retry`) as one more context item when it is asked again."""
    example = next_swe_example(trajectory, trajectory.instance_id or "episode", build)
    if retry is None:
        return example
    return example.model_copy(update={"context": [*example.context, retry]})


def parse_turn(turn: Turn) -> tuple[str, ToolCall] | str:
    """(thought, tool call) of an output that keeps the contract, else why it does not."""
    action, error = extract_action(turn.text)
    if action is None:
        return error or "no action"
    try:
        call = parse_complete_action(action)
    except ActionParseError as e:
        return f"not exactly one tool call: {e}"
    thought = turn.text[turn.text.index(THINK_OPEN) + len(THINK_OPEN) : turn.text.index(THINK_CLOSE)]
    return thought.strip(), call


def format_error_observation(why: str, truncated: bool = False) -> str:
    """What the policy is told after a format error: what was wrong and what an output looks like."""
    cut = " (the output was cut off at the completion limit)" if truncated else ""
    return (
        f"Your output is not in the expected format: {why}{cut}. Nothing was run.\n"
        f"Write your reasoning between {THINK_OPEN} and {THINK_CLOSE}, then exactly one tool call and "
        f"nothing after it, for example:\n{EXAMPLE_OUTPUT}"
    )


def failed_attempt(turn: Turn, why: str, build: BuildConfig) -> ContextItem:
    """The context item that shows a failed output (its action part when it has one) and the error."""
    action, _ = extract_action(turn.text)
    shown = (turn.text if action is None else action).strip() or "(an empty output)"
    observation = format_error_observation(why, turn.truncated)
    cap = build.observation_max_chars
    return ContextItem(action=truncate_middle(shown, cap), observation=truncate_middle(observation, cap))


def save_episode(episode: Episode, path: str | Path) -> Path:
    """Write the episode's trajectory as one JSON line (atomically); `trajectories` reads it back."""
    write_jsonl([episode.trajectory], path)
    return Path(path)
