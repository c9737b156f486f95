"""Sampling: the HF `generate` implementation of the `Generator` Protocol (`srl_agent.protocols`).

A generator takes tokenized prompts and returns, for each, `n` completions as token ids (the stop token
included when the model stopped, so that training also learns to stop), decoded text (the stop token
left out), the finish reason and the sampler's per-token log-probabilities. A `StopRule` ends a
completion before its end-of-turn token:
- stop strings, kept in both its tokens and its text: SWE rollouts stop at `</function>`, since the
  output contract allows exactly one tool call and nothing after it (agent harnesses such as
  OpenHands stop there for the same reason);
- the end of a math step (`stop_at_step_end`): after `</think>`, the step ends where the next one
  begins (`trajectories.math_steps.step_end`). Without it a step rollout writes on into later steps,
  which the similarity reward counts against it. The tokens that showed the next step beginning
  stay in the completion's token ids (they were sampled; training sees what was sampled), the text
  stops before them (it is what the reward scores).
`srl_agent.generation.make_generator` picks the backend: this one, or vLLM (`srl_agent.generation.vllm_engine`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from srl_agent.logprobs import autocast
from srl_agent.protocols import Completion
from srl_agent.rewards import THINK_CLOSE
from trajectories.math_steps import step_end


@dataclass(frozen=True)
class StopRule:
    """Where a completion ends before its end-of-turn token (pure; shared by every backend).

    `strings`: the first of these ends it, kept. `step_end`: the action's step ends where a next step
    begins (after the first `</think>` of `prefill` + completion; `prefill` is the text the prompt
    puts at the start of the policy's turn), the marker of the next step not kept in the text.
    """

    strings: tuple[str, ...] = ()
    step_end: bool = False
    prefill: str = ""

    @property
    def active(self) -> bool:
        """False when nothing but the end of the turn ends a completion."""
        return bool(self.strings) or self.step_end

    def find(self, text: str) -> tuple[int, int] | None:
        """(end, seen) for a completion `text` that has ended: it is `text[:end]`, and `text[:seen]`
        is the shortest prefix that shows it; None while it has not. Once found, a longer text
        finds the same, so the shortest such token prefix can be found by bisection."""
        hits = []
        for s in self.strings:
            i = text.find(s)
            if i >= 0:
                hits.append((i + len(s), i + len(s)))
        if self.step_end:
            full = self.prefill + text
            close = full.find(THINK_CLOSE)
            if close >= 0:
                start = close + len(THINK_CLOSE)
                hit = step_end(full[start:])
                if hit is not None:
                    shift = start - len(self.prefill)
                    hits.append((max(hit[0] + shift, 0), max(hit[1] + shift, 0)))
        return min(hits, key=lambda h: h[1]) if hits else None


class HFGenerator:
    """Sampling with `model.generate`, left-padded batches of at most `batch_size` sequences.

    The per-token log-probabilities are `generate`'s own scores (after temperature and top-p)
    normalised over the vocabulary: the distribution each token was drawn from.

    With `share_prefill` (the default), the `n` completions of a prompt share one prefill of it
    (`shared_prefill`) instead of `generate` prefilling each of the `n` copies: for 4 rollouts of 64
    tokens from a 2,000-token SWE step on 2 CPU cores, the 4 prefills were more than half of the time
    (bench/bench_prefill_sharing.py: 2x faster shared). Both ways give the same completions and
    log-probabilities up to float rounding; `share_prefill=False` keeps `generate`'s own expansion
    (`num_return_sequences=n`) for comparison.

    It samples from the policy itself (`owns_weights` False): the trainer's updates are what it samples
    from, so `update_weights`, `sleep` and `wake` have nothing to do.
    """

    owns_weights = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 32,
        top_p: float = 1.0,
        compute_dtype: str = "float32",
        stop: StopRule | None = None,
        top_k: int = 0,
        share_prefill: bool = True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.top_p, self.top_k, self.compute_dtype = batch_size, top_p, top_k, compute_dtype
        self.stop_ids = stop_token_ids(tokenizer)
        self.stop = stop if stop is not None else StopRule()
        self.share_prefill = share_prefill

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, greedy: bool = False
    ) -> list[list[Completion]]:
        from transformers import GenerationConfig, StoppingCriteriaList

        n = 1 if greedy else n
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_p=None if greedy else self.top_p,
            # 0 turns the cut off; None would mean transformers' default top_k=50
            top_k=None if greedy else self.top_k,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(self.stop.strings) or None,
            return_dict_in_generate=True,
            output_scores=True,  # the processed scores of each step: the sampler's log-probs
        )
        was_training = self.model.training
        self.model.eval()
        per_call = max(1, self.batch_size // n)
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), per_call):
            chunk = prompts[start : start + per_call]
            ids, attn = left_pad(chunk, self.tokenizer.pad_token_id, self.model.device)
            # stop strings are generate's own; the step end needs the decoded completion
            criteria = (
                [_StepEndCriteria(self.stop, self.tokenizer, ids.shape[1])] if self.stop.step_end else None
            )
            stopping = StoppingCriteriaList(criteria) if criteria else None
            with autocast(self.model.device, self.compute_dtype):
                generated = self._generate(ids, attn, n, config, stopping)
            logprobs = self.model.compute_transition_scores(
                generated.sequences, generated.scores, normalize_logits=True
            ).tolist()
            new = generated.sequences[:, ids.shape[1] :].tolist()
            for i in range(len(chunk)):
                out.append(
                    [self._completion(new[k], logprobs[k], max_new_tokens) for k in range(i * n, (i + 1) * n)]
                )
        self.model.train(was_training)
        return out

    def update_weights(self, model: Any) -> None:
        """Nothing: the weights sampled from are the policy's own."""

    def sleep(self) -> None:
        """Nothing: `generate` holds no memory between calls."""

    def wake(self) -> None:
        """Nothing: it never sleeps."""

    def _generate(self, ids: torch.Tensor, attn: torch.Tensor, n: int, config: Any, stopping: Any) -> Any:
        """`generate` on left-padded prompts [B, W]: sequences [B * n, W + new], row i * n + k the k-th
        completion of prompt i, with `config`'s scores."""
        kwargs = {"tokenizer": self.tokenizer, "stopping_criteria": stopping}
        if not (self.share_prefill and n > 1 and ids.shape[1] > 1):
            return self.model.generate(input_ids=ids, attention_mask=attn, generation_config=config, **kwargs)
        once = copy.deepcopy(config)
        once.num_return_sequences = 1  # the rows are the copies already
        # generate reads the cache's length and runs only the last prompt token, then decodes
        return self.model.generate(
            input_ids=ids.repeat_interleave(n, dim=0),
            attention_mask=attn.repeat_interleave(n, dim=0),
            past_key_values=shared_prefill(self.model, ids, attn, n),
            generation_config=once,
            **kwargs,
        )

    def _completion(self, tokens: list[int], logprobs: list[float], max_new_tokens: int) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        body = tokens if stop is None else tokens[:stop]
        cut = stop_cut(self.tokenizer, body, self.stop)
        if cut is not None:  # ended by the stop rule: drop what followed (padding)
            text = self._decode(body[:cut])
            found = self.stop.find(text)
            return Completion(body[:cut], text[: found[0]] if found else text, "stop", logprobs[:cut])
        kept = tokens if stop is None else tokens[: stop + 1]
        finish = "length" if stop is None and len(tokens) >= max_new_tokens else "stop"
        return Completion(kept, self._decode(body), finish, logprobs[: len(kept)])

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def stop_cut(tokenizer: Any, ids: list[int], stop: StopRule) -> int | None:
    """The length of the shortest prefix of `ids` whose text `stop` finds ended (None: no such prefix).

    A stop string or a step marker may span several tokens, and a sequence that finished early is
    followed by padding, so the cut is found on the decoded text: a binary search over prefix lengths
    (a prefix found ended stays so as it grows), about log2(len(ids)) decodes. Special tokens are
    decoded as written, as `generate`'s stop-string check reads them.
    """

    def holds(n: int) -> bool:
        return stop.find(tokenizer.decode(ids[:n], skip_special_tokens=False)) is not None

    if not stop.active or not holds(len(ids)):
        return None
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if holds(mid) else (mid + 1, high)
    return low


def shared_prefill(model: Any, ids: torch.Tensor, attn: torch.Tensor, n: int) -> Any:
    """The KV cache of left-padded prompts [B, W] but their last token, computed once per prompt and
    repeated `n` times along the batch (row i * n + k holds prompt i): `generate` given it with the
    prompts repeated the same way runs only the last prompt token before decoding, which is what
    `num_return_sequences=n` would do after prefilling every prompt `n` times.

    Positions are `generate`'s own for left padding (counted from each prompt's first real token), so
    the cache is the one its prefill would build. Needs W > 1: the last token is left to `generate`,
    which takes its logits from it."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    model(
        input_ids=ids[:, :-1],
        attention_mask=attn[:, :-1],
        position_ids=positions[:, :-1],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # the logits are not used: skip the [B, W, vocab] projection
    )
    cache.batch_repeat_interleave(n)
    return cache


class _StepEndCriteria:
    """A `generate` stopping criterion: each row is done once its completion's step has ended.

    Decodes each row's completion at every new token (a few hundred tokens at most: microseconds
    against a forward pass)."""

    def __init__(self, stop: StopRule, tokenizer: Any, prompt_width: int):
        self.stop, self.tokenizer, self.width = stop, tokenizer, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        rows = input_ids[:, self.width :].tolist()
        done = [self.stop.find(self.tokenizer.decode(r, skip_special_tokens=False)) is not None for r in rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The end-of-turn tokens: eos and, for ChatML templates, `<|im_end|>`."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn: `<|im_end|>` for ChatML templates, else eos."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        return im_end
    return tokenizer.eos_token_id


def left_pad(seqs: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        attn[i, width - len(s) :] = 1
    return ids.to(device), attn.to(device)
