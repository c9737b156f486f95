"""Helpers shared by the trainer tests (a plain module: test files import it by name)."""

from __future__ import annotations

from trajectories.record import ContextItem, StepExample

# The tiny model's char-level tokenizer makes every character a token: keep prompts short. The
# prefilled `<think>` (one token for this tokenizer) lets a random model reach the format by chance.
TINY = [
    "model.name=tiny-random",
    "prompt.system_prompt=Answer.",
    "prompt.prefill=<think>",
    "trainer.progress=false",
]


def math_example(group: str, step: int, target: str, answer: str | None = None) -> StepExample:
    context = [ContextItem(f"{i + 1}. s") for i in range(step)]
    return StepExample("math", group, step, step + 1, f"q{group}", context, target, answer=answer)
