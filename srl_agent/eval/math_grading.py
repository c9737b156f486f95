"""Grading math answers for benchmark evaluation: answer extraction, checks that cannot hang, pass@k.

- `extract_answer`: the content of a response's last `\\boxed{...}` (nested braces matched), else a
  GSM8K-style `#### answer` line; None when the response states no final answer.
This is the module that imports math-verify (only when a check runs).

- `Checker`: math-verify's equivalence check (gold first, as math-verify expects) in a worker
  process, each check under a wall-clock timeout. math-verify's own timeout relies on signals, which
  work on the main thread only, and one pathological expression can otherwise hang a whole run: a
  check past its timeout kills the worker (a fresh one starts for the next check) and is reported as
  `timeout`, not as wrong.
- `pass_at_k` (the unbiased estimator of Chen et al. 2021, 1 - C(n-c, k) / C(n, k)) and `avg_at_k`
  (mean accuracy over the k samples of each problem), as pure functions.

`srl_agent.eval.math_report` grades with these (`evaluate --task math --samples`), and
`srl_agent.eval.math_bench` generates the responses (`evaluate --task math --benchmark`).
"""

from __future__ import annotations

import math
import multiprocessing
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from trajectories.math_steps import last_boxed

_GSM8K_ANSWER = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")

_STARTUP_TIMEOUT = 300.0
"""Seconds a fresh checker worker may take to start and import what its check needs."""

Verdict = Literal["correct", "wrong", "no_answer", "timeout", "error"]


def extract_answer(response: str, lenient: bool = False) -> str | None:
    """The final answer a response states: its last `\\boxed{}`, else its last `#### ...` line.

    `lenient` adds the Qwen2.5-Math toolkit's fallbacks for responses that state neither (small
    models rarely box their answer): the number after the last "the answer is", else the last number
    in the response (commas dropped)."""
    boxed = last_boxed(response)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    lines = _GSM8K_ANSWER.findall(response)
    if lines:
        return lines[-1].replace(",", "")
    if not lenient:
        return None
    text = response.replace(",", "")
    stated = _ANSWER_IS.split(text)
    if len(stated) > 1:
        first = _NUMBER.search(stated[-1])
        if first is not None:
            return first.group().rstrip(".")
    numbers = _NUMBER.findall(text)
    return numbers[-1].rstrip(".") if numbers else None


def parse_answer(text: str) -> Any:
    """math-verify's reading of a bare answer (`5`, `\\frac{1}{2}`): as math unless it is already
    delimited (`$...$`) or boxed."""
    from math_verify import parse

    return parse(text if "$" in text or "\\boxed" in text else f"${text}$")


def response_matches(gold: str, response: str) -> bool:
    """math-verify: does the final answer math-verify finds in free text `response` equal `gold`?
    Raises what math-verify raises on text it cannot parse."""
    from math_verify import parse, verify

    return bool(verify(parse_answer(gold), parse(response)))


def verify_answer(gold: str, answer: str) -> bool:
    """math-verify: is `answer` equivalent to `gold`? (Runs in the checker's worker process.)"""
    from math_verify import verify

    return bool(verify(parse_answer(gold), parse_answer(answer)))


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    answer: str | None
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"


class Checker:
    """Checks answers in one worker process, each under `timeout` seconds. Use as a context manager.

    `fn(gold, answer) -> bool` must be importable by name (the worker is spawned, not forked: the
    caller may hold threads and a loaded model).
    """

    def __init__(
        self, timeout: float = 5.0, fn: Callable[[str, str], bool] = verify_answer, lenient: bool = False
    ):
        self.timeout, self.fn, self.lenient = timeout, fn, lenient
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    def check(self, gold: str, response: str) -> Check:
        """The verdict on `response` (a whole model output) against the gold answer."""
        answer = extract_answer(response, self.lenient)
        if answer is None:
            why = "no \\boxed{}, #### line or number" if self.lenient else "no \\boxed{} or #### answer"
            return Check("no_answer", None, f"{why} in the response")
        self._ensure_worker()
        self._conn.send((gold, answer))
        if not self._conn.poll(self.timeout):
            self._kill()
            return Check("timeout", answer, f"the check ran past {self.timeout:g} s")
        ok, detail = self._conn.recv()
        if ok is None:
            return Check("error", answer, detail)
        return Check("correct" if ok else "wrong", answer)

    def _ensure_worker(self) -> None:
        if self._proc is None or not self._proc.is_alive():
            parent, child = self._ctx.Pipe()
            self._proc = self._ctx.Process(target=_serve, args=(child, self.fn), daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
            # A spawned worker imports its modules (math-verify loads sympy: seconds on a busy machine)
            # before it answers: that start-up must not count against the first check's timeout.
            if not parent.poll(_STARTUP_TIMEOUT):
                self._kill()
                raise RuntimeError(f"the answer checker's worker did not start within {_STARTUP_TIMEOUT} s")
            parent.recv()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Any, fn: Callable[[str, str], bool]) -> None:
    """The worker: warms up math-verify (its first call imports sympy and its parsers) and says so,
    then one (gold, answer) in, (bool | None, detail) out, until the pipe closes."""
    if fn is verify_answer:
        verify_answer("1", "1")
    conn.send("ready")
    while True:
        try:
            gold, answer = conn.recv()
        except EOFError:
            return
        try:
            conn.send((bool(fn(gold, answer)), ""))
        except Exception as e:  # noqa: BLE001 - an unparseable expression is the check's verdict, not a crash
            conn.send((None, f"{type(e).__name__}: {e}"))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of k samples drawn without replacement from n, c of them
    correct, is correct: 1 - C(n-c, k) / C(n, k) (unbiased; Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of the share of each problem's k samples that are correct (avg@k)."""
    if not correct:
        return 0.0
    return sum(sum(row) / len(row) for row in correct) / len(correct)
