"""The task factory: SWE tasks with expert trajectories, minted from a Python repository by injecting bugs."""
