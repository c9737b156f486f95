"""The G rollouts of a prompt sharing its prefill: HF generation with and without it, on a long SWE step.

    python bench/bench_prefill_sharing.py [--model smollm2-135m] [--group 4] [--max-new-tokens 64]
                                          [--prompt-tokens 2000] [--rounds 1] [--seed 0]

One SWE SRL prompt of about `--prompt-tokens` tokens: the step examples `configs/swe_demo.yaml` builds
from the SWE-smith sample (`data.build`), rendered with the SWE SRL stage's prompts and the config's
prefill, the example nearest that length taken. `HFGenerator` draws `--group` rollouts of at most
`--max-new-tokens` tokens from it, with the config's stop string, in two modes:
- greedy copies: `top_k=1` sampling, the arg-max at every step (`greedy=True` asks for one
  completion per prompt, so it would share nothing);
- sampled: temperature 1 and the config's top-p/top-k, as SRL training samples.
Each mode runs the old path (`share_prefill=False`: `generate` expands the prompt `--group` times and
prefills every copy) and the shared path (one prefill, its cache repeated), from the same seed, in
alternating order over `--rounds` rounds, after one untimed warm-up call. Both paths draw the same
random numbers, so the sampled completions are expected to match too.

Printed per mode: seconds of each path (median over rounds), the speed-up (old / shared), the same
ratio of process CPU seconds (less moved by other jobs taking turns on the cores), whether the
completions are token for token the same, the largest log-prob difference, the mean completion length;
then one prefill of the prompt timed alone (the share of the old path the shared one saves), and the
machine with its load average before and after (the machine may be shared: read the figures with it).
Target: the shared path at least 1.6x faster on greedy copies with identical completions. Writes
nothing outside a temporary directory. `--rounds 3` took 5 min on an idle 2-core machine (1.98x
greedy, 1.95x sampled, identical completions); under a load average of 5-8 from other jobs the decode
time alone varied several-fold between calls, which swamps the saving: read the figures with the load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from srl_agent.config import TrainConfig
from srl_agent.data import load_splits, shared_swe_source
from srl_agent.generation.hf import HFGenerator, StopRule, left_pad
from srl_agent.models import load_model_and_tokenizer
from srl_agent.prompts import PromptCache
from srl_agent.protocols import Completion
from srl_agent.tasks import SWE, resolve
from trajectories.config import resolve_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "swe_demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=2000, help="the prompt length to aim for")
    parser.add_argument("--rounds", type=int, default=1, help="timed calls per path and mode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()

    cfg = resolve(resolve_config(TrainConfig, CONFIG, ["task=swe", f"model.name={args.model}"]))
    model, tokenizer = load_model_and_tokenizer(args.model)
    prompt, example_id = swe_prompt(cfg, tokenizer, args.prompt_tokens)
    print(f"prompt: {len(prompt)} tokens ({example_id}), {args.model}, G={args.group}, "
          f"{args.max_new_tokens} new tokens, stop {cfg.generation.stop}\n")  # fmt: skip

    def generator(share: bool, top_k: int) -> HFGenerator:
        stop = StopRule(tuple(cfg.generation.stop), False, cfg.prompt.prefill)
        return HFGenerator(model, tokenizer, cfg.generation.batch_size, cfg.generation.top_p,
                           cfg.model.dtype, stop, top_k, share_prefill=share)  # fmt: skip

    generator(True, 0).generate([prompt[:64]], args.group, 4, 1.0)  # warm-up: first-call costs
    modes = {"greedy copies": 1, "sampled": cfg.generation.top_k}
    print(f"{'mode':<14} {'old s':>8} {'shared s':>9} {'speed-up':>9} {'cpu speed-up':>13} {'identical':>10} "
          f"{'max |d logp|':>13} {'mean tokens':>12}")  # fmt: skip
    for mode, top_k in modes.items():
        seconds: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        outs: dict[bool, list[Completion]] = {}
        for r in range(args.rounds):
            for share in (False, True) if r % 2 == 0 else (True, False):
                torch.manual_seed(args.seed)
                started, cpu_started = time.perf_counter(), time.process_time()
                rollouts = generator(share, top_k).generate([prompt], args.group, args.max_new_tokens, 1.0)
                seconds[share].append(time.perf_counter() - started)
                cpu[share].append(time.process_time() - cpu_started)
                outs[share] = rollouts[0]
        old, shared = statistics.median(seconds[False]), statistics.median(seconds[True])
        cpu_ratio = statistics.median(cpu[False]) / statistics.median(cpu[True])
        same = [a.token_ids for a in outs[False]] == [b.token_ids for b in outs[True]]
        diff = max_logprob_difference(outs[False], outs[True]) if same else float("nan")
        tokens = statistics.fmean(len(c.token_ids) for c in outs[True])
        print(f"{mode:<14} {old:>8.1f} {shared:>9.1f} {old / shared:>8.2f}x {cpu_ratio:>12.2f}x {same!s:>10} "
              f"{diff:>13.2e} {tokens:>12.1f}")  # fmt: skip
    print(f"\none prefill of the prompt alone: {time_prefill(model, tokenizer, prompt):.1f} s "
          f"(the old path runs it {args.group} times, the shared path once)")  # fmt: skip
    load_after = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, Python {platform.python_version()}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)"
    )


def swe_prompt(cfg: TrainConfig, tokenizer: Any, target: int) -> tuple[list[int], str]:
    """The SWE SRL prompt whose length is nearest `target` tokens, and its example id."""
    stage = SWE.stage("srl")
    with tempfile.TemporaryDirectory(prefix="srl-bench-prefill-") as tmp:
        splits = load_splits("swe", shared_swe_source(), cfg.data, Path(tmp))
    render = PromptCache(tokenizer, stage.system_prompt, stage.user_turn, cfg.prompt)
    best = min(splits.train + splits.val, key=lambda ex: abs(len(render(ex)) - target))
    return render(best), best.example_id


def max_logprob_difference(old: list[Completion], new: list[Completion]) -> float:
    """The largest |difference| of two paths' log-probs of the same tokens (equal values count 0)."""
    diffs = [
        abs(x - y) for a, b in zip(old, new, strict=True) for x, y in zip(a.logprobs, b.logprobs) if x != y
    ]
    return max(diffs, default=0.0)


@torch.no_grad()
def time_prefill(model: Any, tokenizer: Any, prompt: list[int]) -> float:
    ids, attn = left_pad([prompt], tokenizer.pad_token_id, model.device)
    started = time.perf_counter()
    model(input_ids=ids, attention_mask=attn, logits_to_keep=1)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
