"""The task specs and the seams: `auto` resolved into the config, stages refused by name, rewards behind
the Reward Protocol, masked samples left out of GRPO's groups, `--dry-run` explaining every field."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from srl_helpers import math_example

from srl_agent import grpo
from srl_agent.config import EvalConfig, GRPOConfig, RewardConfig, TrainConfig
from srl_agent.evaluate import parse_args as eval_args
from srl_agent.protocols import Completion, Reward, Scored
from srl_agent.rewards import MathAnswerReward, StepSimilarityReward
from srl_agent.rollouts import Group, judge
from srl_agent.tasks import TASKS, resolve, task_spec
from srl_agent.train import parse_args
from trajectories.config import ConfigError, dump_config, explain_config


@pytest.mark.parametrize(
    ("argv", "similarity", "stop", "filter_"),
    [
        (["--task", "math"], "difflib", [], "std"),
        (["--task", "math", "--stage", "rlvr"], "difflib", [], "dapo"),
        (["--task", "swe"], "rapidfuzz", ["</function>"], "std"),
        (["--task", "swe", "--stage", "sft"], "rapidfuzz", ["</function>"], "std"),
        (["--task", "swe", "--stage", "rlvr"], "rapidfuzz", ["</function>"], "dapo"),
        (
            ["--task", "swe", "reward.similarity=difflib", "generation.stop=[]", "grpo.filter=none"],
            "difflib",
            [],
            "none",
        ),
    ],
)
def test_auto_values_are_resolved_into_the_config_that_is_written(argv, similarity, stop, filter_):
    _, (cfg,) = parse_args(argv)
    written = yaml.safe_load(dump_config(cfg))
    assert written["reward"]["similarity"] == similarity
    assert written["generation"]["stop"] == stop
    assert written["grpo"]["filter"] == filter_
    assert written["generation"]["max_new_tokens"] == (256 if "swe" in argv else 48)
    # math steps end where the step ends (whole RLVR solutions do not); SWE steps at their stop string
    assert written["generation"]["stop_at_step_end"] is ("math" in argv and "rlvr" not in argv)
    assert "auto" not in (
        written["reward"]["similarity"],
        written["generation"]["stop"],
        written["grpo"]["filter"],
    )


def test_the_defaults_stay_auto_for_the_user():
    cfg = TrainConfig()
    assert (cfg.reward.similarity, cfg.generation.stop, cfg.grpo.filter) == ("auto", "auto", "auto")
    assert cfg.generation.max_new_tokens == "auto"
    assert resolve(cfg) is not cfg and cfg.generation.stop == "auto"  # resolve returns a copy


def test_evaluation_configs_resolve_too():
    _, cfg = eval_args(["--task", "swe"])
    assert cfg.reward.similarity == "rapidfuzz" and cfg.generation.stop == ["</function>"]
    assert isinstance(resolve(EvalConfig(task="math")).generation.stop, list)


def test_a_stage_a_task_lacks_is_refused_with_the_reason():
    lacking = replace(task_spec("swe"), missing_stages={"dpo": "not written yet"})
    with pytest.raises(ConfigError, match=r"stage: dpo is not available for --task swe \(not written yet\)"):
        lacking.stage("dpo")
    with pytest.raises(ConfigError, match="unknown task"):
        task_spec("chess")


def test_every_stage_reward_fits_the_reward_protocol():
    """Every stage scores completions with a pure reward, except those of whole agent episodes,
    which the task's tests reward in the episode's environment."""
    for spec in TASKS.values():
        for stage in spec.stages.values():
            assert (stage.reward is None) is stage.episodes
            if stage.reward is not None:
                reward = stage.reward(RewardConfig(similarity="difflib"), "")
                assert isinstance(reward, Reward)
    assert task_spec("swe").stage("rlvr").episodes and not task_spec("math").stage("rlvr").episodes


def test_rewards_put_the_prefill_back_and_score_like_the_pure_functions():
    ex = math_example("g", 1, "2. **Add** x = 5")
    srl = StepSimilarityReward.from_config(RewardConfig(similarity="difflib"), prefill="<think>\n</think>\n")
    assert srl("2. **Add** x = 5", ex).reward == 1.0  # the prefill closed the monologue
    assert StepSimilarityReward("difflib")("2. **Add** x = 5", ex).format_error is not None
    ex.answer = "5"
    assert MathAnswerReward(prefill="<think>x</think>")("so \\boxed{5}", ex).reward == 1.0


def _group(rewards: list[float], masked: set[int] = frozenset()) -> Group:
    scores = [
        Scored(r, None, masked="container died" if i in masked else None) for i, r in enumerate(rewards)
    ]
    completions = [Completion([1], "", "stop") for _ in rewards]
    return Group(math_example("g", 0, "x"), [1], completions, scores)


def test_masked_rollouts_take_no_part_in_filters_and_advantages():
    cfg = GRPOConfig()
    fn_keep, fn_adv = grpo.FILTERS["std"], grpo.ADVANTAGES["grpo"]
    plain = [_group([0.1, 0.5, 0.9, 0.3])]
    keep, adv = judge(plain, fn_keep, fn_adv, cfg)
    assert keep == [True] and adv[0] == pytest.approx(
        fn_adv(torch.tensor([[0.1, 0.5, 0.9, 0.3]]), 1e-6)[0].tolist()
    )
    # rollout 3's reward could not be computed: the group is judged on the other three
    keep, adv = judge([_group([0.1, 0.5, 0.9, -7.0], masked={3})], fn_keep, fn_adv, cfg)
    expected = fn_adv(torch.tensor([[0.1, 0.5, 0.9]], dtype=torch.float64), 1e-6)[0].tolist()
    assert keep == [True] and adv[0][:3] == pytest.approx(expected) and adv[0][3] == 0.0
    # all rewarded rollouts agree once the masked one is left out: no spread, dropped
    keep, _ = judge([_group([0.5, 0.5, 0.5, 0.0], masked={3})], fn_keep, fn_adv, cfg)
    assert keep == [False]
    keep, _ = judge([_group([0.5, 0.2, 0.1, 0.0], masked={1, 2, 3})], fn_keep, fn_adv, cfg)
    assert keep == [False]  # one rewarded rollout is no group


def test_dry_run_explains_every_field_and_loads_back_to_the_config():
    _, (cfg,) = parse_args(["--task", "swe"])
    explained = explain_config(cfg)
    assert yaml.safe_load(explained) == yaml.safe_load(dump_config(cfg))
    assert "# Strings that end a completion" in explained and "# G rollouts per prompt" in explained
    assert any(line.startswith("    # ") for line in explained.splitlines())  # data.build.* too


def test_rlvr_overrides_apply_to_the_rlvr_stage_alone_or_after_srl_and_nowhere_else():
    configs = Path(__file__).resolve().parents[2] / "configs"
    paper = ["--task", "swe", "--config", str(configs / "paper_swe_qwen2.5-coder-7b.yaml")]
    _, (srl,) = parse_args(paper)
    _, (rlvr,) = parse_args([*paper, "--stage", "rlvr"])
    _, (first, second) = parse_args([*paper, "--stage", "srl+rlvr"])
    assert srl.data.source == first.data.source == "SWE-bench/SWE-smith-trajectories"
    assert srl.trainer.batch_size == first.trainer.batch_size == 512
    for cfg in (rlvr, second):  # RLVR acts on tasks, with its own batch
        assert (cfg.data.source, cfg.trainer.batch_size, cfg.grpo.filter) == (
            "SWE-bench/SWE-smith",
            128,
            "dapo",
        )
        assert cfg.rlvr_overrides == [] and cfg.trainer.micro_batch_tokens == 4096
