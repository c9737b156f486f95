"""Sampling: the HF `generate` implementation of the `Generator` Protocol (`srl_agent.protocols`).

A generator takes tokenized prompts and returns, for each, `n` completions as token ids (the stop token
included when the model stopped, so that training also learns to stop), decoded text (the stop token
left out), the finish reason and the sampler's per-token log-probabilities. Stop strings end a
completion too, kept in both its tokens and its text: SWE rollouts stop at `</function>`, since the
output contract allows exactly one tool call and nothing after it (agent harnesses such as OpenHands
stop there for the same reason). vLLM arrives behind the same Protocol with its own issue
(`make_generator` picks the backend).
"""

from __future__ import annotations

from typing import Any

import torch

from srl_agent.config import GenerationConfig
from srl_agent.policy import autocast
from srl_agent.protocols import Completion, Generator


class HFGenerator:
    """Sampling with `model.generate`, left-padded batches of at most `batch_size` sequences.

    The per-token log-probabilities are `generate`'s own scores (after temperature and top-p)
    normalised over the vocabulary: the distribution each token was drawn from.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 32,
        top_p: float = 1.0,
        compute_dtype: str = "float32",
        stop: list[str] | None = None,
        top_k: int = 0,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.top_p, self.top_k, self.compute_dtype = batch_size, top_p, top_k, compute_dtype
        self.stop_ids = stop_token_ids(tokenizer)
        self.stop = list(stop or [])

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, greedy: bool = False
    ) -> list[list[Completion]]:
        from transformers import GenerationConfig

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
            stop_strings=self.stop or None,
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
            with autocast(self.model.device, self.compute_dtype):
                generated = self.model.generate(
                    input_ids=ids,
                    attention_mask=attn,
                    generation_config=config,
                    tokenizer=self.tokenizer,
                )
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

    def _completion(self, tokens: list[int], logprobs: list[float], max_new_tokens: int) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        body = tokens if stop is None else tokens[:stop]
        cut = stop_string_cut(self.tokenizer, body, self.stop)
        if cut is not None:  # ended by a stop string: keep it, drop what followed (padding)
            return Completion(body[:cut], self._decode(body[:cut]), "stop", logprobs[:cut])
        kept = tokens if stop is None else tokens[: stop + 1]
        finish = "length" if stop is None and len(tokens) >= max_new_tokens else "stop"
        return Completion(kept, self._decode(body), finish, logprobs[: len(kept)])

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def stop_string_cut(tokenizer: Any, ids: list[int], stop: list[str]) -> int | None:
    """The length of the shortest prefix of `ids` whose text holds one of `stop` (None: no such prefix).

    A stop string may span several tokens, and a sequence that finished early is followed by padding,
    so the cut is found on the decoded text: a binary search over prefix lengths (a prefix holding a
    stop string stays holding it as it grows), about log2(len(ids)) decodes. Special tokens are decoded
    as written, as `generate`'s stop-string check reads them.
    """

    def holds(n: int) -> bool:
        text = tokenizer.decode(ids[:n], skip_special_tokens=False)
        return any(s in text for s in stop)

    if not stop or not holds(len(ids)):
        return None
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if holds(mid) else (mid + 1, high)
    return low


def make_generator(model: Any, tokenizer: Any, cfg: GenerationConfig, compute_dtype: str) -> Generator:
    """The generator `cfg.backend` names, with the resolved `cfg.stop` strings (see `tasks.resolve`)."""
    if cfg.stop == "auto":
        raise ValueError("generation.stop is still `auto`: resolve the config with srl_agent.tasks.resolve")
    backends = {"hf": HFGenerator}
    return backends[cfg.backend](
        model, tokenizer, cfg.batch_size, cfg.top_p, compute_dtype, cfg.stop, cfg.top_k
    )


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
