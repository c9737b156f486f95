"""What a run leaves behind besides checkpoints: metrics.jsonl, the console, optional sinks, the plot.

`SamplingConsole` shows a training step's sampling as it happens, on stderr: a line per sampling
round (prompts, rollouts, kept, seconds) and, while a round generates, a rich bar with the elapsed
time (plain lines when `trainer.progress` is off), so a step of many minutes is never silent.

`metrics.jsonl` holds one JSON object per training step. On resume it is cut back to the steps the
checkpoint holds (a kill after a step was logged but before it was checkpointed would otherwise leave
that step twice), so the file always lists steps 1..N once each. TensorBoard and wandb are imported
only when the config asks for them.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CURVES = [
    ("reward_mean", "train reward (mean of all rollouts)"),
    ("val_reward_mean", "validation step reward"),
    ("format_error_rate", "format-error rate (train)"),
    ("val_format_error_rate", "format-error rate (validation)"),
    ("zero_std_fraction", "zero-std group fraction"),
    ("loss", "loss"),
]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics file (a line cut by a kill is ignored)."""
    return read_jsonl(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of an append-only log (a line cut by a kill is ignored; no file: [])."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class RunLog:
    """metrics.jsonl plus the optional sinks, all cut back to `resume_step` so a resumed run logs each
    step once: TensorBoard purges later events, wandb resumes the same run (its id is kept in the run
    folder) from the next step."""

    def __init__(
        self,
        run_dir: Path,
        resume_step: int,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "srl-agent",
        config: dict[str, Any] | None = None,
    ):
        self.path = run_dir / "metrics.jsonl"
        kept = [r for r in read_metrics(self.path) if r.get("step", math.inf) <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self.tb = self.wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                _missing("tensorboard")
            else:
                purge = resume_step + 1 if resume_step >= 0 else None
                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                _missing("wandb")
            else:
                id_file = run_dir / "wandb_run_id"
                if not id_file.is_file():
                    id_file.write_text(uuid.uuid4().hex[:12] + "\n", encoding="utf-8")
                self.wandb = wandb_module.init(
                    project=wandb_project,
                    id=id_file.read_text(encoding="utf-8").strip(),
                    name=run_dir.name,
                    dir=str(run_dir),
                    config=config,
                    resume="allow",
                )

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        numbers = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        if self.tb is not None:
            for key, value in numbers.items():
                self.tb.add_scalar(key, value, row["step"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(numbers, step=row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class NullLog:
    """The metrics log of a rank other than 0: rank 0 writes the one log."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _missing(package: str) -> None:
    print(
        f"warning: trainer.{package}=true but {package} is not installed "
        "(pip install -e '.[logging]'); logging to metrics.jsonl only",
        file=sys.stderr,
    )


class SamplingConsole:
    """Reports the rounds of one step's dynamic sampling on stderr (see the module docstring)."""

    def __init__(self, bar: bool, group_size: int) -> None:
        self.bar, self.group_size = bar, group_size

    @contextmanager
    def generating(self, prompts: int) -> Iterator[None]:
        """Around one round's generation: a bar with the elapsed time, or a plain line first."""
        what = f"sampling: generating {prompts} prompts x {self.group_size} rollouts"
        if not self.bar:
            print(f"{what} ...", file=sys.stderr, flush=True)
            yield
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn(what), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True
        ) as progress:
            progress.add_task("generate", total=None)  # one batched call: its length is unknown
            yield

    def round_done(
        self, round_: int, prompts: int, kept: int, total_kept: int, batch: int, started: float
    ) -> None:
        print(
            f"sampling round {round_}: {prompts} prompts, {prompts * self.group_size} rollouts, "
            f"{kept} kept ({total_kept}/{batch} of the batch), {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def summary_line(row: dict[str, Any]) -> str:
    parts = [f"step {row['step']}"]
    for key, label in [
        ("reward_mean", "reward"),
        ("format_error_rate", "fmt_err"),
        ("kept_prompts", "kept"),
        ("loss", "loss"),
        ("val_reward_mean", "val_reward"),
        ("val_format_error_rate", "val_fmt_err"),
    ]:
        value = row.get(key)
        if value is not None:
            parts.append(f"{label} {value:.4g}" if isinstance(value, float) else f"{label} {value}")
    parts.append(f"{row.get('seconds_total', 0.0):.1f}s")
    return "  ".join(parts)


@contextmanager
def progress_bar(enabled: bool, total: int, done: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yields `advance(row)`: a rich progress bar, or plain lines when disabled."""
    if not enabled:
        yield lambda row: print(summary_line(row), flush=True)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as progress:
        task = progress.add_task("train", total=total, completed=done)

        def advance(row: dict[str, Any]) -> None:
            progress.console.print(summary_line(row))
            progress.update(task, completed=row["step"])

        yield advance


def plot_curves(metrics_path: Path, out: Path, title: str) -> Path | None:
    """A PNG with one panel per curve present in the metrics; None when there is nothing to plot."""
    rows = read_metrics(metrics_path)
    panels = [(k, label) for k, label in CURVES if any(r.get(k) is not None for r in rows)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(10, 3.2 * nrows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
