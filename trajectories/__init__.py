"""Expert data in: readers for public SWE trajectory formats and math solutions, and SRL step examples.

Where things are (the data flows top to bottom):
- `record`: the typed, versioned records (`Trajectory`, `StepExample`) and their JSONL form.
- `actions`: the canonical action text (SWE-agent's XML function call), `render_action`/`parse_action`.
- `tools`: canonical tool names and the parsing of actions' text forms in the wild.
- `swe_readers`, `math_steps`: one reader per source format, record (dict) -> `Trajectory`/`MathProblem`;
  math step splitting; `math_steps.bundled_math_path()` is the project's own math set.
- `sources`: files, folders, globs, Hugging Face datasets (`hf`) -> items, with format detection and
  the list of skipped records (`SourceReader`, `read_source`).
- `build`: `BuildConfig` and the streaming cut into train/validation `StepExample` JSONL.
- `cli` (`python -m trajectories inspect|build`).
"""

from trajectories.record import FORMAT_VERSION, ContextItem, Step, StepExample, ToolCall, Trajectory

__all__ = ["FORMAT_VERSION", "ContextItem", "Step", "StepExample", "ToolCall", "Trajectory"]
