"""Do the fast runner and the official swebench harness agree on generated tasks? (issue 23's check)

    python scripts/factory_graders_agree.py runs/factory/toolz 10

Takes N tasks spread over a factory folder, builds their images, and grades two patches per task with
both graders: the gold fix (both must say resolved) and a patch that leaves the bug (a comment line
above the first line of the bug's file: both must say unresolved). Prints one JSON object: the tasks,
the gradings, how many agree, and every row. Needs Docker; the harness writes under
runs/factory-agree/harness.
"""

import json
import sys
from pathlib import Path

from environments.config import EnvConfig, GradingConfig
from environments.factory.source import run_git
from environments.factory.tasks import GeneratedTask, load_folder, task_image
from environments.grader import grade_all


def touched(task: GeneratedTask) -> str:
    """A patch that leaves the bug: a comment line above the first line of the bug's file."""
    path = task.row["patch"].split("\n", 1)[0].split(" b/", 1)[1]
    first = run_git(task.repo_dir, "show", f"{task.base_commit}:{path}").split("\n", 1)[0]
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1,2 @@\n+# touched\n {first}\n"


def main(folder: Path, n: int) -> dict:
    every = load_folder(folder)
    tasks = every[:: max(1, len(every) // n)][:n]
    for task in tasks:
        task_image(task, EnvConfig())
    rows = []
    for kind in ("gold", "comment"):
        pairs = [(t, t.gold_patch if kind == "gold" else touched(t)) for t in tasks]
        harness = grade_all(pairs, GradingConfig(grader="harness"), work_dir="runs/factory-agree/harness",
                            run_prefix=f"agree-{kind}", max_workers=2)  # fmt: skip
        fast = grade_all(pairs, GradingConfig(grader="fast"), work_dir="runs/factory-agree/harness")
        rows += [{"instance_id": t.instance_id, "patch": kind, "harness": harness[t.instance_id].status,
                  "fast": fast[t.instance_id].status} for t in tasks]  # fmt: skip
    return {"tasks": len(tasks), "gradings": len(rows), "agree": sum(r["harness"] == r["fast"] for r in rows),
            "rows": rows}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
