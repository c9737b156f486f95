"""Evaluation: what a model or checkpoint does on held-out work, graded the field's way.

- `swe`: SWE-bench-style evaluation of a policy as an agent (`evaluate --task swe --instances`);
- `oracle` and `search_replace`: the paper's oracle-file setting and its SEARCH/REPLACE edits;
- `agentless`: the paper's end-to-end setting, file localization by the model then the oracle's repair;
- `mini_swe_agent`: the mini-swe-agent package's own agent on the instances, against a served model
  (the only module that imports it: the `scaffolds` extra);
- `math_bench`, `math_report`, `math_grading`: math benchmarks (Qwen2.5-Math protocol), the grading of
  responses and the one report shape;
- `report`: what the evaluations share (output folders named after the model, file-safe names).

`python -m srl_agent.evaluate` is the entry point. Nothing here imports the training loop.
"""
