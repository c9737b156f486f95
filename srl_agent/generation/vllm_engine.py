"""The vLLM implementation of the `Generator` Protocol, colocated in the training process.

`VLLMGenerator` holds a `vllm.LLM` engine in this process (the engine core in-process,
`VLLM_ENABLE_V1_MULTIPROCESSING=0`, one worker: `distributed_executor_backend="uni"`, or
`external_launcher` on each rank of a torchrun run), so that the
trainer can hand it new weights in memory after every optimizer step (`update_weights`), never
through a checkpoint on disk. This is the only module that imports vllm.

- Sampling: G completions per prompt in one request (`SamplingParams.n`: vLLM prefills a prompt once
  for its G samples), prefix caching on (consecutive SRL steps of one trajectory share their
  prefix), the sampler's log-probability of each token after temperature and top-p
  (`logprobs_mode="processed_logprobs"`), stop strings kept in the output. The math step end, which
  no stop string expresses, is applied to the finished completion by the same `StopRule` as the HF
  backend (`generation.stop_cut`), so both backends return the same kind of `Completion`.
- Weight sync: the worker's own in-place reload where this vLLM has it (`reload_weights` with a
  weights iterator, through `collective_rpc`), else the model runner's `load_weights`; which one
  exists is detected, not read from a version number. The prefix cache is reset after every sync
  (its entries were computed by the old weights). On a GPU with `sleep_mode`, the engine sleeps while
  the trainer updates and wakes its weights before they are loaded, then its KV cache.
- The trainer logs the mean gap between the sampler's and its own log-probs of the trained tokens
  every step (`logprob_gap_mean`): it is what shows a sync that did not happen.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from srl_agent import lora
from srl_agent.generation.hf import StopRule, stop_cut, stop_token_ids
from srl_agent.protocols import Completion

if TYPE_CHECKING:
    from srl_agent.config import GenerationConfig


class VLLMGenerator:
    """G completions per prompt from an in-process vLLM engine holding a copy of the policy's weights."""

    owns_weights = True

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        *,
        dtype: str = "float32",
        top_p: float = 1.0,
        top_k: int = 0,
        stop: StopRule | None = None,
        seed: int = 0,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        sleep_mode: bool = False,
        cpu_kv_cache_gb: int = 2,
    ) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gb))
        from vllm import LLM

        self.tokenizer, self.top_p, self.top_k, self.seed = tokenizer, top_p, top_k, seed
        self.stop = stop if stop is not None else StopRule()
        self.stop_ids = stop_token_ids(tokenizer)
        self.sleep_mode = sleep_mode and torch.cuda.is_available()
        self.asleep = False
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=self.sleep_mode,
            enforce_eager=True,
            **executor(),
        )
        self.syncs = 0
        self.reload = self._detect_reload()

    @classmethod
    def for_model(
        cls, model: Any, tokenizer: Any, cfg: GenerationConfig, dtype: str, stop: StopRule, seed: int = 0
    ) -> VLLMGenerator:
        """An engine for the policy `model`: built from the folder it was loaded from (or a copy saved
        to a temporary folder when it has none), then holding `model`'s weights after the trainer's
        first `update_weights`."""
        return cls(
            model_folder(model, tokenizer),
            tokenizer,
            dtype=dtype,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            stop=stop,
            seed=seed,
            max_model_len=cfg.vllm_max_model_len,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            sleep_mode=cfg.vllm_sleep_mode,
        )

    def generate(
        self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, greedy: bool = False
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        n = 1 if greedy else n
        params = SamplingParams(
            n=n,
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else self.top_p,
            top_k=0 if greedy else self.top_k,
            max_tokens=max_new_tokens,
            stop=list(self.stop.strings) or None,
            include_stop_str_in_output=True,
            stop_token_ids=self.stop_ids,
            logprobs=0,  # the sampled token's own log-probability
            skip_special_tokens=True,
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        return [[self._completion(o, max_new_tokens) for o in out.outputs] for out in outputs]

    def _completion(self, output: Any, max_new_tokens: int) -> Completion:
        tokens = list(output.token_ids)
        logprobs = [step[token].logprob for step, token in zip(output.logprobs, tokens, strict=True)]
        if self.stop.step_end:  # the step end is no stop string: cut the finished completion as HF does
            body = tokens[:-1] if tokens and tokens[-1] in self.stop_ids else tokens
            cut = stop_cut(self.tokenizer, body, self.stop)
            if cut is not None:
                text = self.tokenizer.decode(body[:cut], skip_special_tokens=True)
                found = self.stop.find(text)
                return Completion(body[:cut], text[: found[0]] if found else text, "stop", logprobs[:cut])
        finish = "length" if output.finish_reason == "length" and len(tokens) >= max_new_tokens else "stop"
        return Completion(tokens, output.text, finish, logprobs)

    # -- weights ----------------------------------------------------------------------------------

    def _detect_reload(self) -> str:
        """`reload_weights` (the worker's in-place reload) or `load_weights` (the model runner's)."""
        [has_reload] = self.llm.collective_rpc(_has_reload_weights)
        return "reload_weights" if has_reload else "load_weights"

    def update_weights(self, model: Any) -> None:
        """Copy `model`'s parameters into the engine in place, then drop the prefix cache; a sleeping
        engine wakes its weights before they are loaded (never after), then its KV cache."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        weights = _checkpoint_weights(model)
        if self.reload == "reload_weights":
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        else:
            self.llm.collective_rpc(_load_weights, args=(list(weights),))
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()
        self.syncs += 1

    def sleep(self) -> None:
        """Free the engine's GPU memory while the trainer updates (GPU with `sleep_mode` only)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        """Wake a sleeping engine's weights and KV cache (the weights it had when it fell asleep)."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False


def model_folder(model: Any, tokenizer: Any) -> str:
    """A folder the engine can load `model`'s architecture and tokenizer from (a LoRA policy's base
    folder, or the plain model it stands for saved: the engine never sees the adapters)."""
    folder = getattr(model, "name_or_path", "") or ""
    if folder and (Path(folder) / "config.json").is_file():
        return folder
    saved = Path(tempfile.mkdtemp(prefix="srl-agent-vllm-"))
    lora.save_plain(model, saved)
    tokenizer.save_pretrained(saved)
    return str(saved)


def _checkpoint_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's parameters under their checkpoint names, detached, in the engine's layout: a LoRA
    policy's merged weights under the base model's names (`lora.merged_weights`); a model sharded over
    torchrun's ranks gathered one tensor at a time (a collective each, in the same order on every
    rank), so the full model is never held twice."""
    for name, tensor in lora.merged_weights(model):
        yield name, tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _has_reload_weights(worker: Any) -> bool:
    return callable(getattr(worker, "reload_weights", None))


def _load_weights(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    worker.model_runner.model.load_weights(weights=iter(weights))


def executor() -> dict[str, Any]:
    """How the engine runs its one worker: in this process (`uni`); under torchrun, where every rank
    has its own engine for its own prompts, vLLM's `external_launcher` with data parallelism over the
    ranks (the engine joins torchrun's process group instead of starting a group of its own)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return {"distributed_executor_backend": "uni"}
    return {"distributed_executor_backend": "external_launcher", "data_parallel_size": world}
