"""The agent loop: prompts from the SRL step builder, the output contract and its format-error
observations, the replay policy, and real episodes in the bundled tasks' containers: expert replays
resolve (fast grader, and one through the official harness), a submit without an edit does not, the
tiny random model ends with a named status and its saved episode reads back, and every limit and an
environment failure end an episode with their own status."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from environments.replay import load_trajectory
from environments.tasks.bundled import Task, build_images, get_task, load_tasks
from srl_agent import evaluate
from srl_agent.agent import (
    EXAMPLE_OUTPUT,
    EXIT_STATUSES,
    Episode,
    failed_attempt,
    format_error_observation,
    next_example,
    parse_turn,
    run_episode,
    save_episode,
)
from srl_agent.config import AgentConfig, GenerationConfig, PromptConfig
from srl_agent.models import load_model_and_tokenizer
from srl_agent.policies import ModelPolicy, PolicyError, ReplayPolicy, make_policy
from srl_agent.prompts import PromptCache
from srl_agent.protocols import Completion, Turn
from srl_agent.tasks import SWE
from trajectories.actions import render_action
from trajectories.build import BuildConfig, swe_examples
from trajectories.config import ConfigError, run_cli
from trajectories.record import Step, ToolCall, Trajectory, write_jsonl
from trajectories.sources import read_source

REPO = Path(__file__).resolve().parents[2]
STAGE = SWE.stage("srl")
CALL = "<function=bash>\n<parameter=command>ls</parameter>\n</function>"


class ScriptedGenerator:
    """A `Generator` that writes the given outputs in turn and keeps the prompts it was given."""

    def __init__(self, *outputs: str) -> None:
        self.outputs, self.prompts = list(outputs), []

    def generate(self, prompts, n, max_new_tokens, temperature, greedy=False):
        self.prompts.extend(prompts)
        text = self.outputs.pop(0)
        return [[Completion(list(range(len(text))), text, "stop")] for _ in prompts]


def _prefix(trajectory: Trajectory, k: int) -> Trajectory:
    return trajectory.model_copy(update={"steps": trajectory.steps[:k]})


# -- pure parts: prompts, the contract, the replay policy ---------------------------------------------


@pytest.mark.parametrize("window", [1, "all"])
def test_each_turn_is_prompted_with_the_training_prompt_of_that_step(window):
    """After k steps the policy gets exactly the token ids the trainer's PromptCache gives for the SRL
    example of step k built from the same trajectory (same window, caps, system prompt and prefill)."""
    expert = load_trajectory(get_task("srl-agent__paginate-1").expert_trajectory)
    build = BuildConfig(context_steps=window, observation_max_chars=300)
    built = swe_examples(expert, expert.instance_id, build)
    _, tokenizer = load_model_and_tokenizer("tiny-random")
    training = PromptCache(tokenizer, STAGE.system_prompt, STAGE.user_turn, PromptConfig())
    generator = ScriptedGenerator(*["x"] * len(built))
    policy = ModelPolicy(
        generator,
        PromptCache(tokenizer, STAGE.system_prompt, STAGE.user_turn, PromptConfig()),
        max_new_tokens=8,
        max_prompt_tokens=100_000,
    )
    for k, example in enumerate(built):
        turn = policy.act(next_example(_prefix(expert, k), build))
        assert generator.prompts[k] == training(example) and turn.prompt_tokens == len(training(example))
        assert turn.text == PromptConfig().prefill + "x"  # the contract applies to prefill + completion


def test_the_output_contract_and_what_a_format_error_tells_the_policy():
    assert parse_turn(Turn(f"<think>\nlook\n</think>\n{CALL}")) == (
        "look",
        ToolCall("bash", {"command": "ls"}, raw=f"\n{CALL}"),
    )
    cases = {
        f"hi <think>x</think>\n{CALL}": "text before <think>",
        CALL: "expected one <think> and one </think>",
        "<think>x</think>\n   ": "no action after </think>",
        f"<think>x</think>\n{CALL}\n{CALL}": "not exactly one tool call: 2 function calls; exactly one is allowed",
        "<think>x</think> I would run ls": "not exactly one tool call: no <function=NAME> ... </function> block",
        # SWE-agent's parser refuses a call without its required arguments before running anything
        "<think></think>\n<function=str_replace_editor>\n</function>": (
            "not exactly one tool call: 'str_replace_editor' call without its required argument(s) command, path"
        ),
    }
    assert {text: parse_turn(Turn(text)) for text in cases} == cases
    assert parse_turn(Turn(EXAMPLE_OUTPUT))[1].name == "bash"  # the example the policy is shown keeps it
    told = format_error_observation("no action after </think>", truncated=True)
    assert told.startswith("Your output is not in the expected format: no action after </think> (the output")
    assert "Nothing was run" in told and told.endswith(EXAMPLE_OUTPUT)


def test_a_failed_attempt_is_shown_after_the_window_when_the_policy_is_asked_again():
    expert = load_trajectory(get_task("srl-agent__intervals-1").expert_trajectory)
    build = BuildConfig(context_steps=2, observation_max_chars=200)
    history = _prefix(expert, 4)
    failed = Turn("<think>\nedit\n</think>\n<function=bash>" + "y" * 500, truncated=True)
    retry = failed_attempt(failed, parse_turn(failed), build)
    again = next_example(history, build, retry)
    first = next_example(history, build)
    assert again.context == [*first.context, retry] and again.step_index == first.step_index == 4
    assert len(retry.action) <= 200 and "characters truncated" in retry.action  # capped like observations
    user = STAGE.user_turn(again, True)
    assert "Step 5:\n<function=bash>yyy" in user
    assert "Observation:\nYour output is not in the expected format" in user
    assert user.endswith("Write your reasoning, then your next tool call.")
    empty = failed_attempt(Turn(""), "expected one <think> and one </think>", build)
    assert empty.action == "(an empty output)"


def test_the_replay_policy_writes_each_recorded_action_in_the_canonical_form_then_submits():
    policy = make_policy(f"replay:{REPO / 'environments' / 'tasks'}")
    assert isinstance(policy, ReplayPolicy)
    assert sorted(policy.trajectories) == [t.instance_id for t in load_tasks()]
    for iid, expert in policy.trajectories.items():
        for k, step in enumerate(expert.steps):
            thought, call = parse_turn(policy.act(next_example(_prefix(expert, k), BuildConfig())))
            assert render_action(call) == render_action(step.action), (iid, k)
            assert thought == step.thought.strip()
    unfinished = Trajectory(
        task="t", steps=[Step("look", ToolCall("bash", {"command": "ls"}))], instance_id="a__b-1"
    )
    after = ReplayPolicy({"a__b-1": unfinished}, "mem").act(next_example(unfinished, BuildConfig()))
    assert parse_turn(after)[1] == ToolCall("submit", raw="\n<function=submit>\n</function>")


def test_a_trajectory_for_another_instance_is_an_error_naming_both(tmp_path):
    paginate = get_task("srl-agent__paginate-1")
    policy = make_policy(f"replay:{paginate.expert_trajectory}")
    episode_of_another = Trajectory(task="t", steps=[], instance_id="srl-agent__intervals-1")
    with pytest.raises(
        PolicyError, match=r"holds no trajectory for srl-agent__intervals-1 \(it has srl-agent__paginate-1\)"
    ):
        policy.act(next_example(episode_of_another, BuildConfig()))
    with pytest.raises(ConfigError, match=r"^model.name \(--model\): replay:.*nope: no such file or folder"):
        make_policy(f"replay:{tmp_path / 'nope'}")
    write_jsonl([Trajectory(task="t", steps=[], instance_id="x__y-1")] * 2, tmp_path / "two.jsonl")
    with pytest.raises(ConfigError, match="two trajectories for x__y-1"):
        make_policy(f"replay:{tmp_path / 'two.jsonl'}")


@pytest.mark.parametrize("scaffold", ["agent", "oracle"])
@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("replay:/missing.traj", "replay:/missing.traj: no such file or folder"),
        ("replay:", "'replay:' names no path"),
    ],
)
def test_a_bad_replay_model_is_a_message_naming_the_flag_and_the_path(
    scaffold, model, says, tmp_path, capsys
):
    argv = ["--task", "swe", "--instances", "--scaffold", scaffold, "--model", model, "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: evaluate.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"error: model.name (--model): {says}" + (
        ": replay:PATH, a recorded file or folder" if model == "replay:" else ""
    )


# -- real episodes in containers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    tasks = load_tasks()
    build_images(tasks)  # cached by the images' input labels: about a second when nothing changed
    return tasks


def _episode(policy, task: Task, cfg: AgentConfig | None = None, grade: bool = False, **kw):
    from environments.container import DockerEnvironment
    from environments.grading import run_tests_in_env

    with DockerEnvironment(task.image) as env:
        episode = run_episode(policy, env, task.problem_statement, task.instance_id, cfg, **kw)
        if not grade:
            return episode, None
        env.reset()
        return episode, run_tests_in_env(env, task, episode.patch)


def _inspect(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "trajectories", "inspect", str(path), "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.docker
def test_replaying_each_expert_through_the_loop_resolves_its_task(tasks, tmp_path):
    policy = make_policy(f"replay:{REPO / 'environments' / 'tasks'}")
    for task in tasks:
        expert = load_trajectory(task.expert_trajectory)
        episode, grade = _episode(policy, task, grade=True)
        assert (episode.exit_status, grade.status) == ("submitted", "resolved"), task.instance_id
        assert episode.patch == expert.final_patch  # the loop reproduces the recorded submission
        assert [s.action.name for s in episode.trajectory.steps] == [s.action.name for s in expert.steps]
        assert all(t.environment_seconds > 0 and t.step == i for i, t in enumerate(episode.turns))
    path = save_episode(episode, tmp_path / "episode.jsonl")
    summary = _inspect(path)
    assert (summary["trajectories"], summary["steps"], summary["skipped"]) == (1, len(expert.steps), [])


class Recording:
    """A replay policy that keeps every example it is asked to act on."""

    def __init__(self, replay: ReplayPolicy) -> None:
        self.replay, self.examples = replay, []

    def act(self, example):
        self.examples.append(example)
        return self.replay.act(example)

    def check_instance(self, instance_id: str) -> None:
        self.replay.check_instance(instance_id)

    def episode(self):
        return self.replay.episode()


@pytest.mark.docker
def test_the_agent_acts_on_the_prompts_the_experts_steps_train(tasks):
    """Acting along an expert's actions, the policy is shown, at every turn, the task and context of
    that expert's training step example (the same window): nothing differs between how a policy
    learns and how it acts. (The issue was once shown bare while training showed it wrapped in the
    experts' instance template.)"""
    build = BuildConfig(context_steps=1, observation_max_chars=1000)
    for task in tasks:
        expert = load_trajectory(task.expert_trajectory)
        policy = Recording(ReplayPolicy({task.instance_id: expert}, "mem"))
        episode, _ = _episode(policy, task, build=build)
        assert episode.exit_status == "submitted", task.instance_id
        trained = list(swe_examples(expert, task.instance_id, build))
        assert len(policy.examples) == len(trained) == len(expert.steps)
        for acted, example in zip(policy.examples, trained, strict=True):
            not_shown = {"target", "num_steps", "meta"}  # not in the prompt (srl_agent.prompts)
            shown, taught = (
                json.loads(re.sub(r" in \d+\.\d+s", " in Ns", e.model_dump_json(exclude=not_shown)))
                for e in (acted, example)
            )  # pytest's timings differ from run to run
            assert shown == taught, (task.instance_id, example.step_index)


@pytest.mark.docker
def test_a_replayed_episode_resolves_through_the_official_harness(tasks, tmp_path):
    from environments.grading import grade_with_harness, harness_run_id

    task = get_task("srl-agent__intervals-1")
    episode, _ = _episode(make_policy(f"replay:{task.expert_trajectory}"), task)
    grades = grade_with_harness([task.instance()], {task.instance_id: episode.patch},
                                harness_run_id("agent-replay"), work_dir=tmp_path)  # fmt: skip
    assert grades[task.instance_id].status == "resolved"


@pytest.mark.docker
def test_submitting_without_an_edit_does_not_resolve(tasks):
    task = get_task("srl-agent__configlite-1")
    looks = Trajectory(
        task="t",
        steps=[
            Step("look", ToolCall("bash", {"command": "git status --short"})),
            Step("done", ToolCall("submit")),
        ],
        instance_id=task.instance_id,
    )
    episode, grade = _episode(ReplayPolicy({task.instance_id: looks}, "mem"), task, grade=True)
    assert (episode.exit_status, episode.patch, len(episode.trajectory.steps)) == ("submitted", "", 2)
    assert grade.status == "empty_patch" and not grade.resolved


@pytest.fixture(scope="module")
def tiny_policy() -> ModelPolicy:
    batched = make_policy(
        "tiny-random",
        generation=GenerationConfig(max_new_tokens=16, stop=list(SWE.stop), stop_at_step_end=False),
    )
    return batched.policy  # the model policy the factory wraps for concurrent episodes


@pytest.mark.docker
def test_the_tiny_random_model_runs_an_episode_to_a_named_status_and_it_reads_back(
    tasks, tiny_policy, tmp_path
):
    task = get_task("srl-agent__paginate-1")
    episode, _ = _episode(tiny_policy, task, AgentConfig(max_steps=4, max_format_errors=2))
    assert episode.exit_status in EXIT_STATUSES and not episode.infrastructure_error
    assert episode.exit_status == "format_errors"  # a random model writes no tool call
    stats = episode.stats()
    assert (stats["turns"], stats["format_errors"], stats["steps"]) == (2, 2, 0)
    assert stats["prompt_tokens"] > 1000 and 0 < stats["completion_tokens"] <= 2 * 16
    assert stats["generation_seconds"] > 0 and stats["environment_seconds"] == 0  # nothing ran
    assert all(t.output and t.format_error and t.step is None for t in episode.turns)
    path = save_episode(episode, tmp_path / "tiny.jsonl")
    summary = _inspect(path)
    assert (summary["trajectories"], summary["steps"], summary["format_error_turns"]) == (1, 0, 2)
    [back] = read_source(path).items
    assert back.exit_status == "format_errors" and back.final_patch == ""
    assert Episode.from_trajectory(back).stats() == stats


@pytest.mark.docker
def test_a_prompt_past_the_limit_ends_the_episode_with_context_limit(tasks, tiny_policy):
    task = get_task("srl-agent__paginate-1")
    shown = AgentConfig().instance_template.replace("{problem_statement}", task.problem_statement)
    start = Trajectory(task=shown, steps=[], instance_id=task.instance_id)
    first = tiny_policy.prompts.render(next_example(start, BuildConfig()))
    # the first prompt fits; asking again after its format error adds the failed output, which does not
    policy = ModelPolicy(
        tiny_policy.generator, tiny_policy.prompts, max_new_tokens=16, max_prompt_tokens=len(first)
    )
    episode, _ = _episode(policy, task, AgentConfig(max_format_errors=3))
    assert (episode.exit_status, len(episode.turns)) == ("context_limit", 1)
    assert f"more than the {len(first)} the policy takes" in episode.detail


@pytest.mark.docker
def test_the_step_limit_ends_the_episode_with_the_diff_so_far(tasks):
    task = get_task("srl-agent__paginate-1")
    episode, _ = _episode(make_policy(f"replay:{task.expert_trajectory}"), task, AgentConfig(max_steps=5))
    assert (episode.exit_status, len(episode.trajectory.steps)) == ("step_limit", 5)
    assert "reproduce.py" in episode.patch  # no submit: the repository's diff after the fifth step


@pytest.mark.docker
def test_the_wall_clock_limit_ends_the_episode_between_turns(tasks):
    task = get_task("srl-agent__paginate-1")
    slow = Trajectory(
        task="t",
        steps=[Step("wait", ToolCall("bash", {"command": "sleep 1"})), Step("done", ToolCall("submit"))],
        instance_id=task.instance_id,
    )
    episode, _ = _episode(ReplayPolicy({task.instance_id: slow}, "mem"), task, AgentConfig(time_limit=0.5))
    assert (episode.exit_status, len(episode.trajectory.steps), episode.patch) == ("time_limit", 1, "")


@pytest.mark.docker
def test_a_container_killed_under_a_command_ends_the_episode_as_an_environment_error(tasks):
    import threading

    from environments import docker_engine
    from environments.container import DockerEnvironment

    task = get_task("srl-agent__paginate-1")
    steps = [Step("wait", ToolCall("bash", {"command": "sleep 30"})), Step("done", ToolCall("submit"))]
    waits = ReplayPolicy(
        {task.instance_id: Trajectory(task="t", steps=steps, instance_id=task.instance_id)}, "mem"
    )
    with DockerEnvironment(task.image) as env:
        container = docker_engine.shared_client().containers.get(env.container_id)
        killer = threading.Timer(1.0, container.kill)
        killer.start()
        episode = run_episode(waits, env, task.problem_statement, task.instance_id)
        killer.join()
    # not an observation telling the policy that its shell exited: the environment died
    assert (episode.exit_status, episode.patch, episode.trajectory.steps) == ("environment_error", None, [])
    assert episode.infrastructure_error
    assert "ContainerStopped" in episode.detail and "stopped while the command ran" in episode.detail


@pytest.mark.docker
def test_a_container_that_dies_mid_episode_is_an_environment_error(tasks):
    from environments import docker_engine
    from environments.container import DockerEnvironment

    task = get_task("srl-agent__intervals-1")
    replay = make_policy(f"replay:{task.expert_trajectory}")

    class Saboteur:
        """Replays, but removes the episode's container before its third turn."""

        env = None

        def act(self, example):
            if example.step_index == 2:
                docker_engine.shared_client().containers.get(self.env.container_id).remove(force=True)
            return replay.act(example)

    saboteur = Saboteur()
    with DockerEnvironment(task.image) as env:
        saboteur.env = env
        episode = run_episode(saboteur, env, task.problem_statement, task.instance_id)
    # the removal surfaces under the command that was running (ContainerStopped) or at the next one
    assert (episode.exit_status, episode.patch) == ("environment_error", None)
    assert 2 <= len(episode.trajectory.steps) < len(replay.trajectory_for(task.instance_id).steps)
    assert episode.infrastructure_error
    assert "NotFound" in episode.detail or "stopped while the command ran (it was removed)" in episode.detail
