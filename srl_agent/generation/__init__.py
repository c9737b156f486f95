"""Which sampler stands behind the `Generator` seam: `make_generator` reads `generation.backend`.

- `hf`: transformers `generate` on the policy itself (`srl_agent.generation.hf.HFGenerator`).
- `vllm`: a vLLM engine in this process with its own copy of the weights, which the trainer updates
  in place after every step (`srl_agent.generation.vllm_engine.VLLMGenerator`).

Both end completions by the same `StopRule`, made here from the resolved config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from srl_agent.generation.hf import HFGenerator, StopRule

if TYPE_CHECKING:
    from srl_agent.config import GenerationConfig
    from srl_agent.protocols import Generator


def make_generator(
    model: Any, tokenizer: Any, cfg: GenerationConfig, compute_dtype: str, prefill: str = ""
) -> Generator:
    """The generator `cfg.backend` names, with the stop rule of the resolved `cfg` (see
    `tasks.resolve`); `prefill` is the text the prompts put at the start of the policy's turn."""
    if cfg.stop == "auto" or cfg.stop_at_step_end == "auto":
        raise ValueError("generation has `auto` values: resolve the config with srl_agent.tasks.resolve")
    stop = StopRule(tuple(cfg.stop), cfg.stop_at_step_end, prefill)
    if cfg.backend == "vllm":  # an engine with its own copy of the weights (the trainer syncs them)
        from srl_agent.generation.vllm_engine import VLLMGenerator

        return VLLMGenerator.for_model(model, tokenizer, cfg, compute_dtype, stop)
    return HFGenerator(
        model, tokenizer, cfg.batch_size, cfg.top_p, compute_dtype, stop, cfg.top_k, cfg.share_prefill
    )
