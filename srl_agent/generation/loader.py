"""One inference loader: the model, its prompt cache and its generator, made in one place.

Every caller that samples from a model goes through here: training (`inference_for` the policy it
trains, so the generator samples from the weights being trained or, with vLLM, a synced copy),
step-reward evaluation, the math benchmarks, the oracle scaffold and the agent policies
(`load_inference` by the model string a user gave: the embedded default, an HF id or local folder,
a run checkpoint, or a LoRA checkpoint, merged; `srl_agent.models` says how each loads).

The prompt cache renders the stage's prompts (system prompt, user turn, chat template, then
`prompt.prefill`); the generator is the backend `generation.backend` names with the stop rule of the
resolved `generation` section (`srl_agent.tasks.resolve`), which callers may narrow first (whole math
solutions stop at nothing but the end of the turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from srl_agent.generation import make_generator
from srl_agent.models import device_of, load_model_and_tokenizer, source_key
from srl_agent.prompts import PromptCache

if TYPE_CHECKING:
    from srl_agent.config import GenerationConfig, ModelConfig, PromptConfig
    from srl_agent.protocols import Generator
    from srl_agent.tasks import StageSpec


@dataclass
class Inference:
    """A model ready to answer prompts: the model and tokenizer, the stage's prompt cache, a generator."""

    model: Any
    tokenizer: Any
    prompts: PromptCache
    generator: Generator

    @property
    def context_length(self) -> int:
        """The most positions the model takes (its config's `max_position_embeddings`)."""
        return int(self.model.config.max_position_embeddings)


def inference_for(
    model: Any,
    tokenizer: Any,
    stage: StageSpec,
    generation: GenerationConfig,
    prompt: PromptConfig,
    dtype: str,
) -> Inference:
    """The prompt cache and generator of a model already loaded (the policy a training run trains)."""
    prompts = PromptCache(tokenizer, stage.system_prompt, stage.user_turn, prompt)
    generator = make_generator(model, tokenizer, generation, dtype, prompt.prefill)
    return Inference(model, tokenizer, prompts, generator)


def load_inference(
    name: str,
    model_cfg: ModelConfig,
    stage: StageSpec,
    generation: GenerationConfig,
    prompt: PromptConfig,
    seed: int,
) -> Inference:
    """The model `name` names (in `model_cfg`'s dtype, on its device), with `inference_for`'s parts. A
    name that loads nothing is a ConfigError naming the key it came from (`model.init_from` or
    `model.name`)."""
    key = source_key(model_cfg)
    model, tokenizer = load_model_and_tokenizer(name, model_cfg.dtype, device_of(model_cfg), seed, key)
    return inference_for(model, tokenizer, stage, generation, prompt, model_cfg.dtype)
