"""Save a checkpoint as a plain model: `python -m srl_agent.export CHECKPOINT OUT`.

A LoRA run's checkpoint (its checkpoints/last or best: an adapter that names its base) is merged
into its base; any other checkpoint or model is saved as it is, without the trainer state. OUT then
holds the weights, config and tokenizer as `save_pretrained` writes them, which plain
`transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads (no peft, no srl-agent), as do vLLM and
`python -m srl_agent.evaluate --model OUT`. The merge runs in float32 on the CPU; `--dtype bfloat16`
casts the merged weights for a smaller folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trajectories.config import ConfigError, run_cli

EXAMPLES = """\
examples:
  python -m srl_agent.export runs/math-srl/checkpoints/best runs/math-srl/merged
  python -m srl_agent.export runs/swe-srl/checkpoints/last qwen-coder-srl --dtype bfloat16
"""


def export(source: str, out: Path, dtype: str = "float32", seed: int = 0) -> Path:
    """Write the plain model `source` stands for (a LoRA checkpoint merged) and its tokenizer to `out`.
    `seed` rebuilds a `tiny-random` base (the seed the run trained with)."""
    from srl_agent.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(source, dtype=dtype, device="cpu", seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srl_agent.export",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a run's checkpoint folder (or any model name srl-agent loads)")
    parser.add_argument("out", type=Path, help="the folder to write the plain model to (new or empty)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--seed", type=int, default=0, help="only for a tiny-random base: the run's seed")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments, write nothing")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError(f"{args.out} is not empty: export writes into a new or empty folder")
    if args.dry_run:
        print(f"would write {args.checkpoint} as a plain {args.dtype} model to {args.out}")
        return 0
    print(export(args.checkpoint, args.out, args.dtype, args.seed))
    return 0


if __name__ == "__main__":
    run_cli(main)
