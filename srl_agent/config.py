"""The training run's configuration: one typed section per component, defaults here and only here.

`python -m srl_agent.train --task math` with no config file runs the embedded CPU demo; the YAML files
in `configs/` override only what differs (paper settings for GPU machines, ...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trajectories.config import Section


class ModelConfig(Section):
    name: str = "smollm2-135m"  # `smollm2-135m` (embedded default), an HF model id or a local folder
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "auto"  # auto = cuda when available, else cpu


class TrainConfig(Section):
    task: Literal["swe", "math"] = "math"
    stage: Literal["srl", "rlvr", "sft"] = "srl"
    seed: int = 0
    run_dir: str = "runs/{task}-{stage}"  # `{task}` and `{stage}` are filled in
    model: ModelConfig = Field(default_factory=ModelConfig)
