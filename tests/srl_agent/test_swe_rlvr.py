"""SWE RLVR: agent episodes in the bundled tasks' containers, rewarded by their tests.

A scripted mixture policy (per task, one episode replays the expert, the other submits at once) gives
groups with reward spread, advantages and a loss that moves every trainable parameter; the trained
sequences are token for token what the model was given and wrote, with gradient only on what it
wrote; infrastructure failures are masked and named, never scored 0; a run killed mid-step resumes
with no step lost or repeated and no container left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from environments.config import GradingConfig
from environments.grading import GradeResult
from environments.pool import EnvironmentPool
from environments.replay import load_trajectory
from environments.tasks.bundled import Task, build_images, load_tasks
from srl_agent.config import (
    AgentConfig,
    EpisodesConfig,
    GenerationConfig,
    GRPOConfig,
    PromptConfig,
    TrainConfig,
)
from srl_agent.data import DataStream
from srl_agent.generation import make_generator
from srl_agent.models import load_model_and_tokenizer
from srl_agent.policies import BatchedPolicy, ModelPolicy, ReplayPolicy
from srl_agent.prompts import PromptCache
from srl_agent.protocols import Scored, Turn
from srl_agent.swe_rlvr import (
    EpisodeGroup,
    EpisodeRollout,
    EpisodeRunner,
    collected_stats,
    episode_stats,
    outcome_score,
)
from srl_agent.tasks import SWE, resolve
from srl_agent.update import episode_sequences, policy_update
from trajectories.build import BuildConfig

REPO = Path(__file__).resolve().parents[2]
STAGE = SWE.stage("rlvr")
SUBMIT = "<think>\nDone.\n</think>\n<function=submit>\n</function>"


# -- pure parts ---------------------------------------------------------------------------------------


def test_the_outcome_reward_is_the_tests_verdict_and_a_grader_failure_is_masked():
    assert outcome_score(GradeResult("t", "resolved")).reward == 1.0
    for status in ("unresolved", "patch_failed", "empty_patch", "timeout"):  # the policy's doing
        scored = outcome_score(GradeResult("t", status))
        assert (scored.reward, scored.masked) == (0.0, None)
    failed = outcome_score(GradeResult("t", "error", detail="no test results (exit 4)"))
    assert failed.masked is not None and "no test results" in failed.masked


def test_every_grade_has_an_evaluation_status_and_hung_tests_count_against_the_patch():
    """Evaluation and RLVR read a grade alike: a timeout is unresolved (in the resolve rate's
    denominator, as on SWE-bench's leaderboards) and rewarded 0; only `error` is no verdict."""
    from typing import get_args

    from environments.grading import Status
    from srl_agent.eval.swe import _GRADE_STATUS

    assert set(_GRADE_STATUS) == set(get_args(Status))
    assert _GRADE_STATUS["timeout"] == "unresolved" and _GRADE_STATUS["error"] == "infrastructure_error"
    for status in get_args(Status):
        assert (outcome_score(GradeResult("t", status)).masked is None) == (status != "error")


def _rollout(iid: str, reward: float, masked: str | None = None) -> EpisodeRollout:
    grade = None if masked else ("resolved" if reward else "unresolved")
    return EpisodeRollout(iid, Scored(reward, None, masked=masked), exit_status="submitted", grade=grade)


def test_episode_metrics_name_filtered_and_infrastructure_failed_tasks():
    class T:
        def __init__(self, iid):
            self.instance_id = iid

    groups = [
        EpisodeGroup(T("spread"), [_rollout("spread", 1.0), _rollout("spread", 0.0)]),
        EpisodeGroup(T("zeros"), [_rollout("zeros", 0.0), _rollout("zeros", 0.0, "no image: gone")]),
        EpisodeGroup(T("dead"), [_rollout("dead", 0.0, "environment: died")] * 2),
    ]
    stats = episode_stats(groups)
    assert stats["reward_mean"] == pytest.approx(1 / 3)  # over the 3 scored episodes only
    assert (stats["episodes"], stats["masked_episodes"], stats["resolved"]) == (6, 3, 1)
    assert stats["masked_reasons"] == {"no image": 1, "environment": 2}
    assert stats["infrastructure_failed_tasks"] == ["dead"]
    assert stats["filtered_tasks"] == {"all_right": [], "all_wrong": ["zeros"]}


def test_concurrent_episodes_have_their_turns_generated_in_one_batch():
    class Recorder:
        def __init__(self):
            self.batches = []

        def act_batch(self, examples):
            self.batches.append(len(examples))
            return [Turn(f"turn {ex}") for ex in examples]

    recorder = Recorder()
    batched = BatchedPolicy(recorder, max_wait=30.0)  # only "everyone is waiting" releases a batch
    answers = {}

    started = threading.Barrier(3)  # as on the runner's threads: registered, then a container starts

    def episode(i):
        with batched.episode() as policy:
            started.wait()
            answers[i] = policy.act(i).text

    threads = [threading.Thread(target=episode, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert recorder.batches == [3] and answers == {i: f"turn {i}" for i in range(3)}


def test_a_token_cap_cuts_micro_batches_without_changing_the_update(tiny):
    import copy

    from srl_agent.update import Sequence, micro_batches

    lengths = [(30, 5), (200, 10), (60, 4), (10, 2), (400, 20), (90, 8)]
    sequences = [
        Sequence([1 + k % 90 for k in range(p)], [1 + k % 90 for k in range(c)], (-1.0) ** i)
        for i, (p, c) in enumerate(lengths)
    ]
    cut = micro_batches(sequences, size=8, tokens=256)
    assert sorted(map(id, (s for m in cut for s in m))) == sorted(map(id, sequences))
    for m in cut:  # padded to the longest prompt plus the longest completion
        width = max(len(s.prompt) for s in m) + max(len(s.completion) for s in m)
        assert len(m) == 1 or len(m) * width <= 256
    assert [len(m) for m in micro_batches(sequences, size=4)] == [4, 2]  # no cap: by count, in order

    model, _, _ = tiny
    updated = []
    for tokens in (None, 256):
        net = copy.deepcopy(model)
        cfg = resolve(TrainConfig(trainer={"micro_batch_tokens": tokens}))
        policy_update(cfg, net, None, torch.optim.SGD(net.parameters(), lr=1.0), sequences)
        updated.append(dict(net.named_parameters()))
    for name, p in updated[0].items():
        torch.testing.assert_close(p, updated[1][name], atol=1e-5, rtol=1e-4)


def test_tasks_come_from_the_sources_evaluation_reads_and_a_resumed_run_keeps_its_split(tmp_path, capsys):
    from environments.tasks.bundled import TASKS_DIR, write_dataset
    from srl_agent.swe_rlvr import load_tasks
    from trajectories.config import ConfigError

    bundled = load_tasks(TrainConfig(task="swe", stage="rlvr"), tmp_path / "a", resume=False)
    assert [len(split) for split in bundled] == [3, 0]
    folder = TrainConfig(task="swe", stage="rlvr", data={"source": str(TASKS_DIR / "paginate")})
    assert [t.instance_id for t in load_tasks(folder, tmp_path / "b", resume=False)[0]] == [
        "srl-agent__paginate-1"
    ]

    # a SWE-bench instance file: graded by the harness (`auto`), or refused by the fast grader with the reason
    rows = write_dataset(load_tasks_bundled(), tmp_path / "instances.json")
    cfg = TrainConfig(task="swe", stage="rlvr", data={"source": str(rows)}, episodes={"val_tasks": 1})
    train, val = load_tasks(cfg, tmp_path / "c", resume=False)
    assert len(train) == 2 and len(val) == 1 and not hasattr(train[0], "test_patch")
    saved = json.loads((tmp_path / "c" / "data" / "tasks.json").read_text())
    assert saved == {"train": [t.instance_id for t in train], "validation": [val[0].instance_id]}
    reseeded = cfg.model_copy(update={"seed": 7})  # a resumed run reads its split back whatever else changed
    assert load_tasks(reseeded, tmp_path / "c", resume=True)[1] == val
    fast = cfg.model_copy(update={"grading": GradingConfig(grader="fast")})
    with pytest.raises(ConfigError, match="no task an episode can be graded on"):
        load_tasks(fast, tmp_path / "d", resume=False)
    assert "the fast grader needs the task's test command and log parser" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="episodes.val_tasks: 3 of 3 tasks leaves none"):
        load_tasks(cfg.model_copy(update={"episodes": EpisodesConfig(val_tasks=3)}), tmp_path / "e", False)


def load_tasks_bundled() -> list[Task]:
    return load_tasks()


# -- episodes in containers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    tasks = load_tasks()
    build_images(tasks)  # cached by the images' input labels
    return tasks


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model_and_tokenizer("tiny-random")
    return model, tokenizer, PromptCache(tokenizer, STAGE.system_prompt, STAGE.user_turn, PromptConfig())


class Mixture:
    """Per task, alternately an episode that replays the expert and one that submits at once; each
    turn carries token ids of its prompt and text, as a model policy's turns do. `sabotage`: the
    first turn of that task's episodes removes its containers (an infrastructure failure)."""

    def __init__(self, tasks, tokenizer, prompts, sabotage: str | None = None):
        trajectories = {t.instance_id: load_trajectory(t.expert_trajectory) for t in tasks}
        self.replay = ReplayPolicy(trajectories, "bundled")
        self.tokenizer, self.prompts, self.sabotage = tokenizer, prompts, sabotage
        self.first_turns: Counter[str] = Counter()
        self.lock = threading.Lock()

    def act_batch(self, examples):  # turns of concurrent episodes come batched, on any thread
        return [self.act(ex) for ex in examples]

    def act(self, example):
        iid = example.meta["instance_id"]
        if iid == self.sabotage and example.step_index == 0:
            from environments import docker_engine
            from environments.tasks.bundled import get_task

            client = docker_engine.shared_client()
            for c in client.containers.list(filters={"ancestor": get_task(iid).image}):
                c.remove(force=True)
        if example.step_index == 0:  # a new episode: every other one of a task replays the expert
            with self.lock:
                expert = self.first_turns[iid] % 2 == 0
                self.first_turns[iid] += 1
        else:  # only the expert's episodes get past their first turn
            expert = True
        text = self.replay.act(example).text if expert else SUBMIT
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Turn(text, prompt_ids=self.prompts.render(example), token_ids=ids)


def _runner(policy, pool, tmp_path, **agent) -> EpisodeRunner:
    return EpisodeRunner(
        BatchedPolicy(policy, max_wait=0.2),
        pool,
        AgentConfig(**{"max_steps": 16, **agent}),
        BuildConfig(context_steps=1, observation_max_chars=500),
        pool.cfg,
        GradingConfig(grader="fast"),
        tmp_path,
    )


@pytest.mark.docker
def test_a_mixture_policy_gives_reward_spread_advantages_and_moves_every_parameter(tasks, tiny, tmp_path):
    model, tokenizer, prompts = tiny
    two = tasks[:2]
    with EnvironmentPool(size=4) as pool:
        runner = _runner(Mixture(two, tokenizer, prompts), pool, tmp_path)
        collected = runner.collect(DataStream(two, seed=0), 2, GRPOConfig(group_size=2, filter="dapo"))
    assert len(collected.kept) == 2 and collected.rounds == 1
    for group in collected.kept:
        assert sorted(s.reward for s in group.scores) == [0.0, 1.0]  # real test runs in containers
        assert sorted(group.advantages) == pytest.approx([-1.0, 1.0], abs=1e-5)
    stats = collected_stats(collected)
    assert (
        stats["resolved"] == 2
        and stats["masked_episodes"] == 0
        and stats["filtered_tasks"]["all_wrong"] == []
    )
    assert stats["exit_statuses"] == {"submitted": 4} and stats["generation_batch_mean"] >= 1

    sequences = episode_sequences(collected.kept)
    turns = sum(len(r.turns) for g in collected.kept for r in g.rollouts)
    assert len(sequences) == turns and sorted({round(s.advantage, 4) for s in sequences}) == [-1.0, 1.0]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    stats = policy_update(resolve(TrainConfig()), model, None, optimizer, sequences)
    assert stats["sequences"] == turns and stats["grad_norm"] > 0
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []


@pytest.mark.docker
def test_infrastructure_failures_are_masked_out_of_the_loss_and_named(tasks, tiny, tmp_path):
    """A task whose image is missing and a task whose containers die mid-episode: every episode of
    both is masked (no reward, no advantage, no sequence), both are named; the other task trains."""
    _, tokenizer, prompts = tiny
    healthy, doomed = tasks[0], tasks[1]

    class Missing:  # a task whose image nobody can provide
        instance_id, problem_statement, base_commit = "nowhere__gone-1", "Fix it.", None
        image = "srl-agent-test/no-such-image:none"

    mixture = Mixture(tasks, tokenizer, prompts, sabotage=doomed.instance_id)
    with EnvironmentPool(size=4) as pool:
        groups = _runner(mixture, pool, tmp_path).groups([healthy, doomed, Missing()], 2)
        # the pool recovers: the dead environments were dropped, a new episode gets a working one
        again = _runner(mixture, pool, tmp_path).groups([healthy], 1)
    stats = episode_stats(groups)
    assert stats["infrastructure_failed_tasks"] == [doomed.instance_id, "nowhere__gone-1"]
    assert stats["masked_reasons"] == {"environment": 2, "no image": 2}
    assert (stats["episodes"], stats["masked_episodes"]) == (6, 4)
    from srl_agent import grpo
    from srl_agent.rollouts import judge

    keep, advantages = judge(groups, grpo.FILTERS["dapo"], grpo.ADVANTAGES["grpo"], GRPOConfig())
    assert keep == [True, False, False]
    for g, adv in zip(groups, advantages, strict=True):
        g.advantages = adv
    sequences = episode_sequences([g for g, k in zip(groups, keep, strict=True) if k])
    healthy_turns = [t for r in groups[0].rollouts for t in r.turns]
    assert [s.prompt for s in sequences] == [t.prompt_ids for t in healthy_turns]
    assert again[0].rollouts[0].score.masked is None


@pytest.mark.docker
def test_the_trained_sequences_are_the_sampled_tokens_with_gradient_only_on_the_policys(
    tasks, tiny, tmp_path
):
    model, tokenizer, prompts = tiny
    generation = GenerationConfig(stop=["</function>"], stop_at_step_end=False, max_new_tokens=24)
    inner = make_generator(model, tokenizer, generation, "float32", PromptConfig().prefill)
    calls = []

    class Recording:
        def generate(self, ids, n, max_new_tokens, temperature, greedy=False):
            out = inner.generate(ids, n, max_new_tokens, temperature, greedy)
            calls.extend(zip(ids, [c[0] for c in out], strict=True))
            return out

    policy = ModelPolicy(Recording(), prompts, max_new_tokens=24, max_prompt_tokens=100_000, greedy=False)
    with EnvironmentPool(size=2) as pool:
        [group] = _runner(policy, pool, tmp_path, max_steps=3).groups([tasks[0]], 2)
    group.advantages = [1.0, -1.0]
    sequences = episode_sequences([group])
    # every turn of both episodes, each exactly the prompt given and the tokens and log-probs sampled
    sampled = Counter((tuple(p), tuple(c.token_ids), tuple(c.logprobs)) for p, c in calls)
    trained = Counter((tuple(s.prompt), tuple(s.completion), tuple(s.sampler_logprobs)) for s in sequences)
    assert trained == sampled and len(sequences) >= 2

    from srl_agent.logprobs import completion_logprobs, pack

    batch = pack([s.prompt for s in sequences], [s.completion for s in sequences], 0, model.device)
    width_p = batch["input_ids"].shape[1] - batch["mask"].shape[1]
    for row, s in enumerate(sequences):  # the packed row is the prompt, then the completion, as sampled
        real = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert real == s.prompt + s.completion
        assert batch["mask"][row].sum() == len(s.completion)
    grads = {}
    head = model.get_output_embeddings()

    def keep_grad(module, inputs, logits):
        logits.register_hook(lambda g: grads.setdefault("g", g))

    hook = head.register_forward_hook(keep_grad)
    try:
        logp = completion_logprobs(model, batch)
        (-(logp * batch["mask"]).sum()).backward()
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    # logits exist only from the last prompt position on; the one at column j predicts completion
    # token j, and only those of real completion tokens carry gradient
    per_position = grads["g"].abs().sum(-1)[:, :-1]
    assert per_position.shape == batch["mask"].shape and width_p > 0
    assert torch.all((per_position > 0) == batch["mask"].bool())


# -- the trainer end to end ---------------------------------------------------------------------------


def _managed_containers(pid: int) -> list[str]:
    from environments import docker_engine
    from environments.labels import MANAGED_LABEL, OWNER_LABEL

    client = docker_engine.shared_client()
    # sparse: no inspect per container, which fails for one removed between the listing and it
    found = client.containers.list(all=True, sparse=True, filters={"label": f"{MANAGED_LABEL}=1"})
    return [c.id for c in found if c.attrs["Labels"].get(OWNER_LABEL, "").split(":")[1:2] == [str(pid)]]


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_killed_mid_step_resumes_with_no_step_lost_or_repeated_and_no_container_left(tasks, tmp_path):
    run_dir = tmp_path / "run"
    argv = [
        sys.executable, "-m", "srl_agent.train", "--task", "swe", "--stage", "rlvr",
        "model.name=tiny-random", f"run_dir={run_dir}", "trainer.steps=3", "trainer.save_every=1",
        "trainer.batch_size=1", "grpo.group_size=2", "grpo.max_sampling_rounds=1", "agent.max_steps=2",
        "generation.max_new_tokens=16", "trainer.progress=false", "environment.pool_size=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    last = run_dir / "checkpoints" / "last" / "state.json"
    while not (metrics.is_file() and metrics.read_text().strip() and last.is_file()) and first.poll() is None:
        assert time.monotonic() < deadline, "the first step did not finish"  # (and was saved)
        time.sleep(0.2)
    # step 2's episodes are running: containers other than the idle ones step 1 left (which the pool
    # may be removing at once, to start the next task's image)
    step_1 = set(_managed_containers(first.pid))
    while not set(_managed_containers(first.pid)) - step_1 and first.poll() is None:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_at_kill = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert done_at_kill in ([1], [1, 2]), first.stdout.read().decode()[-2000:]
    assert _managed_containers(first.pid), "the kill left no container: it did not hit mid-step"

    second = subprocess.run(argv, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert (
        f"at step {done_at_kill[-1]}" in second.stdout or f"at step {done_at_kill[-1] - 1}" in second.stdout
    )
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(r["episodes"] == 2 and r["exit_statuses"] for r in rows)
    assert _managed_containers(first.pid) == []  # the resumed run removed what the killed one left
    info = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert info["step"] == 3
