"""Reward throughput: the paper's difflib similarity vs the exact LCS 2M/T (rapidfuzz) on 512 x 8 rollouts.

    python bench/bench_rewards.py [--prompts 512] [--group 8] [--slow-sample 32]

Three kinds of actions with realistic lengths, each a batch of prompts x group rollouts:
- math steps (~150-400 characters, s1K-1.1-like numbered steps),
- SWE bash calls (the canonical XML form, ~80-250 characters),
- SWE editor `create` calls whose file_text is a real Python source chunk of 2,000-8,000 characters.
Each rollout is the expert action with random character and word edits at a rate drawn from 0-60%
(a policy's near-misses), or with probability 0.1 an unrelated action of the same kind.

For each kind and similarity it prints seconds for the whole batch (difflib without autojunk on the
long editor calls is timed on `--slow-sample` rollouts and extrapolated, marked `~`), and the agreement
between the three scores: mean |difference| and Pearson correlation against rapidfuzz. It ends with the
machine (CPU, cores, Python).
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import random
import statistics
import time

from srl_agent.rewards import difflib_similarity, lcs_similarity
from trajectories.actions import render_action
from trajectories.record import ToolCall

WORDS = [
    "the",
    "sum",
    "of",
    "both",
    "roots",
    "is",
    "equal",
    "to",
    "x",
    "so",
    "we",
    "divide",
    "by",
    "two",
    "and",
    "the",
    "area",
    "becomes",
    "twice",
    "the",
    "height",
    "of",
    "triangle",
    "hence",
    "since",
    "which",
    "gives",
    "therefore",
    "substituting",
    "into",
    "equation",
]


def math_step(rng: random.Random, k: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
    eq = f"$x^{rng.randint(2, 5)} + {rng.randint(1, 99)}x = {rng.randint(1, 999)}$"
    return f"{k}. **{rng.choice(WORDS).title()} {rng.choice(WORDS)}** {body} {eq}."


def bash_call(rng: random.Random) -> str:
    commands = [
        f'grep -rn "def {rng.choice(WORDS)}_{rng.choice(WORDS)}" /testbed/src --include=*.py | head -{rng.randint(5, 50)}',
        f"cd /testbed && python -m pytest tests/test_{rng.choice(WORDS)}.py -x -q -k {rng.choice(WORDS)}",
        f'find /testbed -name "*.py" -path "*{rng.choice(WORDS)}*" | xargs wc -l | sort -n | tail',
        f"cd /testbed && python reproduce.py && git diff --stat && sed -n '{rng.randint(1, 400)},+40p' src/app.py",
    ]
    return render_action(ToolCall("bash", {"command": rng.choice(commands)}))


def python_sources() -> str:
    import difflib
    import json
    import statistics as st

    return "\n".join(inspect.getsource(m) for m in (difflib, json.decoder, st))


def create_call(rng: random.Random, source: str) -> str:
    length = rng.randint(2000, 8000)
    start = rng.randint(0, len(source) - length - 1)
    call = ToolCall(
        "str_replace_editor",
        {
            "command": "create",
            "path": f"/testbed/src/{rng.choice(WORDS)}.py",
            "file_text": source[start : start + length],
        },
    )
    return render_action(call)


def mutate(rng: random.Random, text: str) -> str:
    rate = rng.uniform(0.0, 0.6)
    out = []
    for ch in text:
        r = rng.random()
        if r < rate / 3:
            continue  # deletion
        if r < 2 * rate / 3:
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz =()_.\n"))  # substitution
        elif r < rate:
            out.append(ch + rng.choice("abcdefghijklmnopqrstuvwxyz "))  # insertion
        else:
            out.append(ch)
    return "".join(out)


def batch(kind: str, prompts: int, group: int, rng: random.Random, source: str) -> list[tuple[str, str]]:
    make = {
        "math step": lambda: math_step(rng, rng.randint(1, 9)),
        "SWE bash call": lambda: bash_call(rng),
        "SWE editor create": lambda: create_call(rng, source),
    }[kind]
    pairs = []
    for _ in range(prompts):
        target = make()
        for _ in range(group):
            rollout = make() if rng.random() < 0.1 else mutate(rng, target)
            pairs.append((rollout, target))
    return pairs


def timed(fn, pairs: list[tuple[str, str]], sample: int | None) -> tuple[float, list[float], bool]:
    """(seconds for all pairs, scores of the timed pairs, extrapolated?)."""
    subset = pairs if sample is None or sample >= len(pairs) else pairs[:sample]
    started = time.perf_counter()
    scores = [fn(a, b) for a, b in subset]
    seconds = time.perf_counter() - started
    return seconds * len(pairs) / len(subset), scores, len(subset) < len(pairs)


def pearson(x: list[float], y: list[float]) -> float:
    return statistics.correlation(x, y) if len(set(x)) > 1 and len(set(y)) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--slow-sample", type=int, default=32, help="rollouts timed for slow long-text cases")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    source = python_sources()
    methods = {
        "difflib autojunk=False": lambda a, b: difflib_similarity(a, b, autojunk=False),
        "difflib autojunk=True": lambda a, b: difflib_similarity(a, b, autojunk=True),
        "rapidfuzz LCS": lambda a, b: lcs_similarity(a, b),
    }
    print(
        f"batch: {args.prompts} prompts x {args.group} rollouts = {args.prompts * args.group} scores per kind\n"
    )
    print(
        f"{'kind':<18} {'mean chars':>10}  {'similarity':<23} {'seconds':>9} {'per score':>10} "
        f"{'mean |d| vs LCS':>15} {'pearson vs LCS':>14} {'mean score':>10}"
    )
    for kind in ("math step", "SWE bash call", "SWE editor create"):
        pairs = batch(kind, args.prompts, args.group, rng, source)
        chars = statistics.fmean(len(b) for _, b in pairs)
        results = {}
        for name, fn in methods.items():
            slow = kind == "SWE editor create" and name != "rapidfuzz LCS"
            results[name] = timed(fn, pairs, args.slow_sample if slow else None)
        n_ref = len(results["rapidfuzz LCS"][1])
        for name, (seconds, scores, extrapolated) in results.items():
            ref = results["rapidfuzz LCS"][1][: len(scores)]
            diff = statistics.fmean(abs(a - b) for a, b in zip(scores, ref, strict=True))
            mark = "~" if extrapolated else " "
            print(
                f"{kind:<18} {chars:>10.0f}  {name:<23} {mark}{seconds:>8.2f} {seconds / len(pairs) * 1e3:>8.3f}ms "
                f"{diff:>15.4f} {pearson(scores, ref):>14.4f} {statistics.fmean(scores):>10.4f}"
            )
        assert n_ref == len(pairs)
        print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print("~ = timed on --slow-sample rollouts and extrapolated to the whole batch")


if __name__ == "__main__":
    main()
