"""Expert data in: readers for public SWE trajectory formats and math solutions, and SRL step examples."""

from trajectories.record import FORMAT_VERSION, ContextItem, Step, StepExample, ToolCall, Trajectory

__all__ = ["FORMAT_VERSION", "ContextItem", "Step", "StepExample", "ToolCall", "Trajectory"]
