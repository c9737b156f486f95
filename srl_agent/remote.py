"""A model behind an OpenAI-compatible chat API, where evaluations take a model: `--model openai:MODEL@URL`.

MODEL is the name the server serves, URL the API's base, the part that ends in `/v1`: vLLM's own
server (`python -m srl_agent.serve CHECKPOINT` runs it on a checkpoint and prints the string), SGLang,
or a hosted API (its key in `OPENAI_API_KEY`). Requests go through the project's one client of that
API (`environments.chat_api`: a timeout per request, retries with backoff; the `api` section).

What is sent is what the model is prompted with in-process, as chat messages the server renders with
its own chat template:
- agent scaffold (`RemotePolicy`, made by `policies.make_policy`): per turn, the SWE SRL stage's system
  prompt and user turn of the step example (`prompts.messages`, as `ModelPolicy` renders them),
  `generation.stop` (`</function>`), at most `generation.max_new_tokens`, temperature 0 when
  `agent.greedy` (else `generation.temperature`, `top_p`, and `top_k` when set); the reply is the turn.
- oracle and agentless scaffolds (`srl_agent.eval.oracle.RemoteResponder`): their chats, no stop, at
  most `swe.oracle_max_new_tokens`.
- math benchmarks (`srl_agent.eval.math_bench.RemoteMathResponder`): the RLVR prompt; `math.k` samples
  as one request's `n`.
The prefill (`prompt.prefill`, non-empty by default) opens the assistant turn, which the model
continues (vLLM's and SGLang's `continue_final_message`, with `add_generation_prompt: false`); the
turn is the prefill and the reply, as in-process. A hosted API that refuses those fields takes
`prompt.prefill=""`, the paper's setting. The stop string the API drops from a reply is put back
(`chat_api.kept_stop`), as in-process generation keeps it.

The model's context: its length is what the server says (vLLM's `max_model_len` in `GET /models`,
read once when the model is checked at the start; unknown elsewhere). A prompt the server refuses as
longer than the context (HTTP 400) is the model's context limit, not an infrastructure error. An agent
turn whose prompt leaves less than `generation.max_new_tokens` of the context (or is longer than
`agent.max_prompt_tokens`) ends the episode with `context_limit` as `ModelPolicy`'s does (the reply,
which vLLM cut to fit, is dropped).

Infrastructure errors: no answer after the client's retries (unreachable, timed out, HTTP 429 or 5xx
each time), or another HTTP error. The agent loop ends the episode with `environment_error`
(`protocols.PolicyUnavailable`); the prompted scaffolds record the instance as `infrastructure_error`;
neither counts as unresolved, and a rerun into the same output folder redoes them. A server that does
not answer at the start, or does not serve MODEL, is a ConfigError naming `--model` (nothing runs).

Not for: training, the held-out step reward, export or serving (they need the weights and the
tokenizer), nor the token ids and log-probs of turns (RL trains on those; evaluation does not).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from environments.chat_api import ChatAPIError, ChatClient, ContextTooLong, Reply, kept_stop, parse_model
from srl_agent.prompts import messages
from srl_agent.protocols import PolicyUnavailable, PromptTooLong, Turn
from trajectories.config import ConfigError

if TYPE_CHECKING:
    from environments.chat_api import ChatAPIConfig
    from srl_agent.config import AgentConfig, GenerationConfig, PromptConfig
    from srl_agent.prompts import UserTurn
    from srl_agent.protocols import Policy
    from srl_agent.tasks import StageSpec
    from trajectories.record import StepExample

Chat = list[dict[str, str]]


@dataclass
class RemoteChat:
    """A served model as the scaffolds ask it: the client, the context length the server gave (None
    when it gave none), the prefill and the sampling settings (see the module)."""

    client: ChatClient
    context_length: int | None
    prefill: str
    temperature: float
    top_p: float = 1.0
    top_k: int = 0

    def ask(
        self, chat: Chat, *, max_tokens: int, n: int = 1, greedy: bool = True, stop: list[str] | None = None,
        what: str = "",
    ) -> Reply:  # fmt: skip
        """`n` completions of `chat` (`greedy`: one, at temperature 0), each choice's text the prefill
        and the reply with its stop string kept. Raises the client's `ChatAPIError` (`ContextTooLong`
        when the prompt does not fit); `what` names the request in them (an instance id)."""
        stop = list(stop or [])
        extra: dict[str, object] = {}
        if self.prefill:
            chat = [*chat, {"role": "assistant", "content": self.prefill}]
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        if not greedy:
            extra["top_p"] = self.top_p
            if self.top_k:
                extra["top_k"] = self.top_k  # vLLM's and SGLang's; 0 (no cut) is left unsent
        reply = self.client.complete(
            chat, max_tokens=max_tokens, temperature=0.0 if greedy else self.temperature, stop=stop,
            n=1 if greedy else n, what=what, **extra,
        )  # fmt: skip
        choices = [replace(c, text=self.prefill + kept_stop(c, stop)) for c in reply.choices]
        return replace(reply, choices=choices)

    def prompt_tokens(self, chat: Chat) -> int | None:
        """The tokens of `chat`'s prompt (the prefill included) as the server counts them: one
        completion of a single token; None when the server reports no usage."""
        try:
            reply = self.ask(chat, max_tokens=1)
        except ContextTooLong as e:
            return e.prompt_tokens if e.prompt_tokens is not None else (e.limit or 0) + 1
        return reply.prompt_tokens or None


def connect(
    model: str, api: ChatAPIConfig, prompt: PromptConfig, generation: GenerationConfig,
    temperature: float | None = None,
) -> RemoteChat:  # fmt: skip
    """The model `openai:MODEL@URL` names, checked on its server (it answers and serves MODEL), asked
    with `prompt.prefill` and `generation`'s sampling (`temperature` in place of its own when given).
    ConfigError naming `--model` for a bad form, a server that does not answer or does not serve MODEL."""
    client = ChatClient(parse_model(model), api)
    try:
        context = client.check()
    except ChatAPIError as e:
        raise ConfigError(f"model.name (--model): {e}") from None
    t = generation.temperature if temperature is None else temperature
    return RemoteChat(client, context, prompt.prefill, t, generation.top_p, generation.top_k)


class RemotePolicy:
    """One chat completion per turn from a served model, prompted as `ModelPolicy` prompts (see the
    module). Concurrent episodes each send their own requests; the server batches them."""

    def __init__(
        self, chat: RemoteChat, system: str, user_turn: UserTurn, *, omitted_steps_note: bool, stop: list[str],
        max_new_tokens: int, greedy: bool, max_prompt_tokens: int | None,
    ) -> None:  # fmt: skip
        self.chat, self.system, self.user_turn = chat, system, user_turn
        self.omitted_steps_note, self.stop = omitted_steps_note, stop
        self.max_new_tokens, self.greedy, self.max_prompt_tokens = max_new_tokens, greedy, max_prompt_tokens

    def check_instance(self, instance_id: str) -> None:
        """A model acts on any instance."""

    def episode(self) -> AbstractContextManager[Policy]:
        return nullcontext(self)

    def act(self, example: StepExample) -> Turn:
        chat = messages(example, self.system, self.user_turn, self.omitted_steps_note)
        try:
            reply = self.chat.ask(
                chat, max_tokens=self.max_new_tokens, greedy=self.greedy, stop=self.stop,
                what=str(example.meta.get("instance_id") or ""),
            )  # fmt: skip
        except ContextTooLong as e:
            raise PromptTooLong(
                e.prompt_tokens or 0, e.limit or 0, f"the server refused the prompt: {e}"
            ) from None
        except ChatAPIError as e:
            raise PolicyUnavailable(str(e)) from None
        if self.max_prompt_tokens is not None and reply.prompt_tokens > self.max_prompt_tokens:
            raise PromptTooLong(reply.prompt_tokens, self.max_prompt_tokens)
        choice = reply.choices[0]
        return Turn(
            choice.text,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            truncated=choice.finish_reason == "length",
        )


def remote_policy(
    model: str, agent: AgentConfig, generation: GenerationConfig, prompt: PromptConfig, stage: StageSpec,
    api: ChatAPIConfig,
) -> RemotePolicy:  # fmt: skip
    """The `RemotePolicy` of `openai:MODEL@URL` (`generation` resolved). Its prompt limit:
    `agent.max_prompt_tokens`, else the server's context length less `generation.max_new_tokens`,
    else none (the server refuses what does not fit)."""
    chat = connect(model, api, prompt, generation)
    limit = agent.max_prompt_tokens
    if limit is None and chat.context_length is not None:
        limit = chat.context_length - generation.max_new_tokens
    return RemotePolicy(
        chat,
        prompt.system_prompt if prompt.system_prompt is not None else stage.system_prompt,
        stage.user_turn,
        omitted_steps_note=prompt.omitted_steps_note,
        stop=list(generation.stop),
        max_new_tokens=generation.max_new_tokens,
        greedy=agent.greedy,
        max_prompt_tokens=limit,
    )
