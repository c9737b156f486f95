"""Prompts: the system prompts (math, SWE, math RLVR), the user turns rendered from a StepExample, and
the cache of tokenized prompts. Which system prompt and user turn a task and stage use is the task
spec's choice (`srl_agent.tasks`); this module only writes them.

Every prompt goes through the model's own chat template (`tokenizer.apply_chat_template`), so the same
code serves SmolLM2, Qwen2.5 and the tiny test model. The output contract the prompts ask for, and the
reward enforces (`srl_agent.rewards`): `<think> inner monologue </think>` followed by the action only.

The paper gives its math system prompt verbatim; ours says the same in our own words. It does not give
the user-turn template or a SWE prompt; ours are documented in docs/method.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from srl_agent.rewards import THINK_CLOSE, THINK_OPEN
from trajectories.record import StepExample

if TYPE_CHECKING:
    from srl_agent.config import PromptConfig

MATH_SYSTEM = f"""\
You are a helpful assistant for solving mathematical problems. The user gives you a problem and, \
possibly, the first steps of a solution. Your job is to continue with the very next logical step only.

First think it through in an inner monologue between {THINK_OPEN} and {THINK_CLOSE}: it may be as \
informal and as long as you need. After {THINK_CLOSE}, write only the single next step of the solution, \
in the same style as the previous steps (for example `3. **Title** what this step does`). Do not \
write the whole solution and do not repeat earlier steps.

Format:
{THINK_OPEN}
your reasoning
{THINK_CLOSE}
the next step"""

MATH_RLVR_SYSTEM = f"""\
You are a helpful assistant for solving mathematical problems. Think the problem through in an inner \
monologue between {THINK_OPEN} and {THINK_CLOSE}. After {THINK_CLOSE}, write the complete solution \
as numbered steps and put the final answer in \\boxed{{}}."""

SWE_SYSTEM = f"""\
You are a software engineering agent fixing an issue in a code repository checked out at /testbed. \
You act one step at a time: each reply calls exactly one tool, and its output comes back to you.

Tools:
1. bash: run a shell command (state such as the working directory persists between calls).
   Parameters: command (string, required).
2. str_replace_editor: view, create and edit files.
   Parameters: command (required; one of view, create, str_replace, insert, undo_edit), path (required,
   absolute), file_text (create: the whole file), old_str (str_replace: text that occurs exactly once),
   new_str (str_replace, insert: the new text), insert_line (insert: the line after which to insert),
   view_range (view: [start, end] lines, optional).
3. submit: finish when the issue is fixed. No parameters.

A tool call is written in this XML form and nothing else:
<function=bash>
<parameter=command>grep -rn "def parse" /testbed/src</parameter>
</function>

<function=str_replace_editor>
<parameter=command>str_replace</parameter>
<parameter=path>/testbed/src/app.py</parameter>
<parameter=old_str>
    return a - b
</parameter>
<parameter=new_str>
    return a + b
</parameter>
</function>

First think in an inner monologue between {THINK_OPEN} and {THINK_CLOSE}. After {THINK_CLOSE}, write \
exactly one tool call for your next step, and nothing else."""


def math_user_turn(example: StepExample, omitted_steps_note: bool = True) -> str:
    """The user message of a math step example: the problem, the solution so far, the request."""
    parts = [f"Problem:\n{example.task.strip()}"]
    if example.context:
        shown = "\n\n".join(item.action.strip() for item in example.context)
        parts.append(f"Solution so far:\n{shown}")
    else:
        parts.append("Solution so far: (no steps yet)")
    return _finish(parts, example, omitted_steps_note, "Write your reasoning, then the next step only.")


def swe_user_turn(example: StepExample, omitted_steps_note: bool = True) -> str:
    """The user message of a SWE step example: the issue, then the context steps with observations."""
    parts = [f"<issue>\n{example.task.strip()}\n</issue>"]
    first = example.omitted_steps + 1
    for offset, item in enumerate(example.context):
        block = f"Step {first + offset}:\n{item.action.strip()}"
        if item.observation is not None:
            block += f"\nObservation:\n{item.observation}"
        parts.append(block)
    if not example.context:
        parts.append("No steps taken yet.")
    return _finish(parts, example, omitted_steps_note, "Write your reasoning, then your next tool call.")


def problem_user_turn(example: StepExample, omitted_steps_note: bool = True) -> str:
    """The user message of an outcome-rewarded (RLVR) example: the whole problem and nothing else."""
    return example.task.strip()


def _finish(parts: list[str], example: StepExample, omitted_steps_note: bool, request: str) -> str:
    """Add the omitted-steps note (after the task), the next-title hint and the closing request."""
    if omitted_steps_note and example.omitted_steps:
        noun = "step is" if example.omitted_steps == 1 else "steps are"
        parts.insert(1, f"({example.omitted_steps} earlier {noun} not shown.)")
    if example.hint:
        parts.append(f'Hint: the next step is titled "{example.hint.strip()}".')
    parts.append(request)
    return "\n\n".join(parts)


UserTurn = Callable[[StepExample, bool], str]


def messages(
    example: StepExample, system: str, user_turn: UserTurn, omitted_steps_note: bool = True
) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user_turn(example, omitted_steps_note)},
    ]


class PromptCache:
    """Token ids of each example's prompt, rendered once per example (chat templates are slow).

    A prompt is the system message and the user turn through the model's chat template, ending with
    the assistant turn's opening, then the tokens of `cfg.prefill` (text the policy's turn starts
    with; the reward puts it back in front of the completion).
    """

    def __init__(self, tokenizer: Any, system: str, user_turn: UserTurn, cfg: PromptConfig):
        self.tokenizer, self.user_turn, self.cfg = tokenizer, user_turn, cfg
        self.system = cfg.system_prompt if cfg.system_prompt is not None else system
        self._prefill = tokenizer(cfg.prefill, add_special_tokens=False)["input_ids"] if cfg.prefill else []
        self._ids: dict[str, list[int]] = {}

    def __call__(self, example: StepExample) -> list[int]:
        key = example.example_id
        if key not in self._ids:
            self._ids[key] = self.render(example)
        return self._ids[key]

    def render(self, example: StepExample) -> list[int]:
        """The prompt's token ids, not cached: for prompts that change under one example id (an agent
        episode asks again for the same step after a format error)."""
        chat = messages(example, self.system, self.user_turn, self.cfg.omitted_steps_note)
        return prompt_ids(self.tokenizer, chat) + self._prefill


def prompt_ids(tokenizer: Any, chat: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat rendered by the model's template, ending with the assistant turn's opening."""
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def sft_target(target: str, think_text: str = "") -> str:
    """The expert step wrapped in the output contract: what the SFT baseline learns to write."""
    think = f"{think_text.strip()}\n" if think_text.strip() else ""
    return f"{THINK_OPEN}\n{think}{THINK_CLOSE}\n{target.strip()}"
