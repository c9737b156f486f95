"""SWE tasks for the environments: one folder per bundled task, and the code that reads them.

- `<name>/` (e.g. `paginate/`): a bundled task, a small Python repository written for this project:
  `task.json` (the swebench instance fields), `repo/` (the files at the base commit), `gold.patch`,
  `test.patch` and `expert.traj`.
- `bundled.py`: `Task`, loading and checking the task folders, making their base commits, images and
  swebench dataset.
- `experts.py`: the bundled tasks' handwritten expert steps, recorded into their `expert.traj`.
- `swebench_rows.py`: SWE-bench instance rows as tasks (`SWEBenchTask`).
- `smith_rows.py`: SWE-smith instance rows as tasks (`SmithTask`), graded with their repository's
  SWE-smith profile (`smith_profiles.py`, read from the installed `swesmith` package); `patches.py`
  reverses their bug patch into the gold fix.
- `sources.py`: where evaluation tasks come from (`load_task_source`: bundled, task folders, instance
  files, Hugging Face datasets) and their images (`prepare_image`).
"""
