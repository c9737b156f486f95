"""Where evaluation tasks come from, and their images: the SOURCE of `--instances SOURCE`.

    tasks, skipped = load_task_source("SWE-bench/SWE-bench_Lite", split="test", instance_ids=[...])
    for task in tasks:
        image = prepare_image(task, cfg)    # raises ImageMissing (per instance) when it cannot be had
        with DockerEnvironment(image, cfg) as env: ...
        grade_with_harness([task.instance()], {task.instance_id: patch}, run_id, work_dir=...)

`load_task_source(source)` reads, by what `source` is:
- None: the bundled tasks (`environments/tasks/*/`);
- a folder holding `task.json` (or that file): one task in the bundled layout; a folder of such
  folders: each of them (a malformed one is skipped, the others load);
- a task factory's output folder (`make-tasks --out DIR`: `manifest.json` and `instances.jsonl`):
  its generated tasks (`environments.factory.tasks`), each built on its repository's image; `split`
  `train` or `held_out` reads that part of its manifest's split, `test` (the default) or `all` every task;
  a folder of such folders (one per repository, or links to them): the tasks of each, split alike;
- a `.json` file (a list of rows, or one row), a `.jsonl` file (one row a line) or a `.parquet` file
  of SWE-bench instances (`swebench_rows`) or SWE-smith instances (`smith_rows`, graded with their
  repository's SWE-smith profile from `profiles`, default SWE-smith's own);
- anything else: a Hugging Face dataset (`SWE-bench/SWE-bench_Verified`, `SWE-bench/SWE-bench_Lite`,
  or a local folder of data files such as `test.jsonl` / `test-*.parquet`) read through
  `trajectories.hf.iter_rows` (`datasets.load_dataset`) at `split`. The old `princeton-nlp/` ids of
  the SWE-bench datasets (as papers cite them) read the same datasets under their current
  `SWE-bench/` ids, which carry the fields swebench 5.x grades with (`RENAMED_DATASETS`).

It returns `LoadedTasks(tasks, skipped)`: the tasks, sorted by instance id, and one
`SkippedInstance(instance_id, reason)` for each entry that cannot be evaluated. A row no episode can
run on is skipped; so is, with `require_grading` (the default), a row that cannot be graded (a
SWE-bench row lacking the fields swebench 5.x grades with, as classic 12-field rows do; a SWE-smith row
whose repository has no profile here), so that no episode is spent on it; without `require_grading`
it loads and its `instance()` raises `MissingGradingFields` when it is graded.
Filters (`instance_ids`, a `pattern` searched in the id) apply to both lists (an entry whose id
cannot be read stays in `skipped` unless `instance_ids` are named), then `limit` keeps the first N
tasks. Identical rows of one id are read once (with a warning). Whole-source problems raise
`TaskSourceError`: no such file, a file or dataset that cannot be read, two different entries with
one id among the selected ones (which one would be graded?), an id in `instance_ids` that the source
does not hold.

`prepare_image(task, cfg)` makes `task.image` present: a bundled task's image is built by the
project's own image code (cached on its inputs); a SWE-bench image is used when present and pulled
otherwise; a SWE-smith task's image is derived from its repository image (the first of its names
present, else pulled under SWE-smith's Docker Hub name) with the row's patch committed in /testbed
(cached on the source image and the patch). An image that is neither present nor
pullable is `ImageMissing`, naming it, the instance and how to get it; no engine is
`docker_engine.EngineUnavailable`. Safe to call from several threads (one preparation per image at
a time).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shlex
import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from environments import docker_engine
from environments.config import EnvConfig
from environments.factory import tasks as factory_tasks
from environments.images import ImageBuildError, build_labels, image_label, split_tag
from environments.labels import BASE_COMMIT_LABEL, CONTAINER_LABELS, INPUTS_LABEL, WORKDIR_LABEL
from environments.tasks import bundled
from environments.tasks.smith_profiles import SmithProfile
from environments.tasks.smith_rows import SmithTask, is_smith_row, smith_task_from_row
from environments.tasks.swebench_rows import MissingGradingFields, RowError, SWEBenchTask, task_from_row
from trajectories.errors import SourceError

if TYPE_CHECKING:
    import docker

    from environments.protocol import TaskInstance

log = logging.getLogger(__name__)

BUG_RECIPE = 2  # bump when the way a SWE-smith task's image is made changes (2: install outputs excluded)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
# The SWE-bench datasets moved from princeton-nlp/ to the SWE-bench organisation on the Hub.
RENAMED_DATASETS = {
    f"princeton-nlp/{name}": f"SWE-bench/{name}"
    for name in ("SWE-bench", "SWE-bench_Lite", "SWE-bench_Verified", "SWE-bench_Multimodal")
}
BUG_PATCH_PATH = "/tmp/srl_agent_bug.diff"
_KEEP_ALIVE = ["sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 86400 & wait $!; done']


class TaskSourceError(ValueError):
    """The source as a whole cannot be read or is ambiguous; the message names the path, dataset or ids."""


class ImageMissing(RuntimeError):
    """The task's image is not on this machine and could not be pulled; says how to get it."""

    def __init__(self, instance_id: str, image: str, reason: str):
        self.instance_id, self.image, self.reason = instance_id, image, reason
        super().__init__(
            f"{instance_id}: image {image} is not on this machine and {reason}. Get it where a registry "
            f"is reachable (`docker pull {image}`, then `docker save {image} | docker load` here), or build "
            "it (SWE-bench: `swebench images build TASK_REPO -i ID`), then run again"
        )


class SkippedInstance(NamedTuple):
    instance_id: str
    """The instance's id, or where the entry is (`file.jsonl:3`, a folder) when it has none."""
    reason: str


class LoadedTasks(NamedTuple):
    tasks: list[TaskInstance]
    skipped: list[SkippedInstance]


# ---------------------------------------------------------------------------------------------------
# Loading


def load_task_source(
    source: str | Path | None = None,
    *,
    split: str = "test",
    instance_ids: Iterable[str] | None = None,
    pattern: str | None = None,
    limit: int | None = None,
    require_grading: bool = True,
    profiles: Mapping[str, SmithProfile] | None = None,
) -> LoadedTasks:
    """The tasks `source` holds (see the module docstring). `split` applies to datasets and factory folders;
    `profiles` (SWE-smith repository profiles by `<owner>__<repo>.<commit8>`) to SWE-smith rows only."""
    entries = list(_entries(source, split, profiles))
    counts = Counter(iid for iid, _ in entries if iid is not None)
    ids = set(counts)
    wanted = _wanted(ids, instance_ids, pattern, source)
    duplicates = sorted(iid for iid, n in counts.items() if n > 1 and wanted(iid))
    if duplicates:
        raise TaskSourceError(f"{_label(source)}: different entries for {', '.join(duplicates)}")
    tasks: list[TaskInstance] = []
    skipped: list[SkippedInstance] = []
    for iid, entry in entries:
        if isinstance(entry, SkippedInstance):
            skipped.append(entry)
        elif require_grading and isinstance(entry, SWEBenchTask) and not entry.gradable:
            why = MissingGradingFields(entry.instance_id, entry.missing_for_grading)
            skipped.append(
                SkippedInstance(entry.instance_id, f"{why.reason}; or load it with require_grading=False")
            )
        elif require_grading and isinstance(entry, SmithTask) and not entry.gradable:
            reason = f"{entry.ungradable}; or load it with require_grading=False"
            skipped.append(SkippedInstance(entry.instance_id, reason))
        else:
            tasks.append(entry)
    tasks = [t for t in sorted(tasks, key=lambda t: t.instance_id) if wanted(t.instance_id)]
    # An entry without a readable id may be any instance: kept, unless named ids were asked for.
    skipped = [
        s for s in skipped if wanted(s.instance_id) or (s.instance_id not in ids and instance_ids is None)
    ]
    if limit is not None:
        tasks = tasks[:limit]
    return LoadedTasks(tasks, skipped)


def _entries(
    source: str | Path | None, split: str, profiles: Mapping[str, SmithProfile] | None
) -> Iterator[tuple[str | None, Any]]:
    """(instance id or None, a TaskInstance or a SkippedInstance) for every entry of the source."""
    if source is None:
        yield from _task_folders(bundled.TASKS_DIR)
        return
    path = Path(source)
    factory_folders = _factory_folders(path)
    if factory_folders:
        for folder in factory_folders:
            try:
                generated = factory_tasks.load_folder(folder, split)
            except ValueError as e:
                raise TaskSourceError(str(e)) from None
            yield from ((task.instance_id, task) for task in generated)
        return
    if path.is_file() and path.name == "task.json":
        path = path.parent
    if path.is_dir() and (path / "task.json").is_file():
        yield from _task_folders(path, single=True)
    elif path.is_dir() and any(path.glob("*/task.json")):
        yield from _task_folders(path)
    elif path.is_file() and path.suffix in (".json", ".jsonl"):
        yield from _rows(_file_rows(path), path.name, profiles)
    elif path.is_file() and path.suffix == ".parquet":
        rows = _dataset_rows("parquet", "train", path.name, data_files=str(path))
        yield from _rows(rows, path.name, profiles)
    elif path.exists() or (_HUB_ID.match(str(source)) and path.suffix not in _FILE_SUFFIXES):
        name = str(source) if path.exists() else RENAMED_DATASETS.get(str(source), str(source))
        label = f"{name}[{split}]"
        yield from _rows(_dataset_rows(name, split, label), label, profiles)
    else:
        raise TaskSourceError(
            f"{source}: no such file or folder, and not a Hugging Face dataset id (owner/name)"
        )


def _factory_folders(path: Path) -> list[Path]:
    """`path` when it is a task factory's folder, else its subfolders that are (several repositories'
    tasks read as one source), else none."""
    if not path.is_dir():
        return []
    if factory_tasks.is_factory_folder(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and factory_tasks.is_factory_folder(p))


def _task_folders(directory: Path, single: bool = False) -> Iterator[tuple[str | None, Any]]:
    folders = [directory] if single else sorted(p.parent for p in directory.glob("*/task.json"))
    for folder in folders:
        try:
            task = bundled.load_task(folder)
        except bundled.TaskError as e:
            if single:
                raise TaskSourceError(str(e)) from None
            yield None, SkippedInstance(str(folder), str(e))
            continue
        yield task.instance_id, task


def _rows(
    rows: Iterable[tuple[str, Any]], label: str, profiles: Mapping[str, SmithProfile] | None
) -> Iterator[tuple[str | None, Any]]:
    first: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (where, row) of its first row
    for where, row in rows:
        if isinstance(row, SkippedInstance):
            yield None, row
            continue
        if not isinstance(row, dict):
            yield None, SkippedInstance(where, f"expected an object (a row), got {type(row).__name__}")
            continue
        iid = row.get("instance_id")
        iid = iid.strip() if isinstance(iid, str) and iid.strip() else None
        if iid is not None and iid in first and first[iid][1] == row:
            log.warning("%s: %s repeats %s's row for %s; read once", label, where, first[iid][0], iid)
            continue
        if iid is not None:
            first.setdefault(iid, (where, row))
        try:
            yield iid, smith_task_from_row(row, profiles) if is_smith_row(row) else task_from_row(row)
        except RowError as e:
            yield iid, SkippedInstance(iid or where, f"{e} ({label})")


def _file_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) of a .json (a list of rows or one row) or .jsonl file; a bad line is a row error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskSourceError(f"{path}: cannot read: {e}") from None
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"{path.name}:{number}", json.loads(line)
            except json.JSONDecodeError as e:
                yield (
                    f"{path.name}:{number}",
                    SkippedInstance(f"{path.name}:{number}", f"not valid JSON ({e})"),
                )
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskSourceError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise TaskSourceError(
            f"{path}: expected a list of instances or one instance, got {type(data).__name__}"
        )
    for number, row in enumerate(data):
        yield f"{path.name}[{number}]", row


def _dataset_rows(
    name: str, split: str, label: str, data_files: str | None = None
) -> Iterator[tuple[str, Any]]:
    from trajectories.hf import iter_rows

    try:
        for number, row in enumerate(iter_rows(name, split=split, data_files=data_files)):
            yield f"{label}[{number}]", row
    except SourceError as e:
        raise TaskSourceError(str(e)) from None


def _wanted(
    known: set[str], instance_ids: Iterable[str] | None, pattern: str | None, source: str | Path | None
) -> Callable[[str], bool]:
    """Whether an id is selected; raises TaskSourceError for a named id the source lacks or a bad pattern."""
    chosen = set(instance_ids) if instance_ids is not None else None
    if chosen is not None and chosen - known:
        unknown = sorted(chosen - known)
        raise TaskSourceError(f"{_label(source)} holds no instance {', '.join(unknown)} ({len(known)} known)")
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as e:
        raise TaskSourceError(f"pattern {pattern!r} is not a regular expression: {e}") from None
    return lambda iid: (chosen is None or iid in chosen) and (regex is None or bool(regex.search(iid)))


def _label(source: str | Path | None) -> str:
    return "the bundled tasks" if source is None else str(source)


# ---------------------------------------------------------------------------------------------------
# Images


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def prepare_image(
    task: TaskInstance,
    cfg: EnvConfig | None = None,
    *,
    client: docker.DockerClient | None = None,
    pull: bool = True,
    rebuild: bool = False,
) -> str:
    """Make `task.image` present on the engine and return it (see the module docstring).

    `pull=False` never asks a registry. Raises ImageMissing, ImageBuildError (a bundled build or a
    SWE-smith row's patch does not apply) or EngineUnavailable; each concerns this task only.
    """
    cfg = cfg or EnvConfig()
    client = client or docker_engine.shared_client()
    # A bundled build goes through the shared base image: one build at a time.
    key = "bundled" if isinstance(task, bundled.Task) else task.image
    with _lock(key):
        if isinstance(task, bundled.Task):
            return bundled.build_images([task], cfg, client=client, rebuild=rebuild)[0]
        if isinstance(task, factory_tasks.GeneratedTask):
            return factory_tasks.task_image(task, cfg, client)
        if isinstance(task, SmithTask):
            source = _smith_source(client, task, pull=pull)
            return _bug_image(client, task, source, cfg, rebuild=rebuild)
        return present_or_pulled(client, task.image, task.instance_id, pull=pull)


def present_or_pulled(client: docker.DockerClient, image: str, instance_id: str, *, pull: bool = True) -> str:
    """`image` when the engine has it, else after pulling it; ImageMissing when neither works."""
    try:
        client.images.get(image)
        return image
    except docker_engine.ImageNotFound:
        pass
    if not pull:
        raise ImageMissing(instance_id, image, "pulling is off")
    repository, tag = split_tag(image)
    log.info("pulling %s for %s", image, instance_id)
    try:
        client.images.pull(repository, tag=tag)
    except docker_engine.APIError as e:
        raise ImageMissing(instance_id, image, f"pulling it failed ({_first_line(e)})") from None
    return image


def _smith_source(client: docker.DockerClient, task: SmithTask, *, pull: bool) -> str:
    """The first of `task.source_images` the engine has, else the Docker Hub one (the last) pulled."""
    for name in task.source_images:
        try:
            client.images.get(name)
            return name
        except docker_engine.ImageNotFound:
            continue
    others = ", ".join(task.source_images[:-1])
    try:
        return present_or_pulled(client, task.source_images[-1], task.instance_id, pull=pull)
    except ImageMissing as e:
        raise ImageMissing(task.instance_id, task.source_images[-1], f"{e.reason}; nor is {others}") from None


def _bug_image(
    client: docker.DockerClient, task: SmithTask, source: str, cfg: EnvConfig, *, rebuild: bool
) -> str:
    """`task.image`: `source` with the row's patch committed in /testbed (a parentless commit, with a
    fixed author and date), HEAD labelled as the base commit."""
    source_image = client.images.get(source)
    patch_hash = hashlib.sha256(task.bug_patch.encode()).hexdigest()
    recipe = {"recipe": BUG_RECIPE, "source": source_image.id, "patch": patch_hash, "workdir": cfg.workdir}
    inputs = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    if not rebuild and image_label(client, task.image, INPUTS_LABEL) == inputs:
        return task.image
    name, email = bundled.COMMIT_AUTHOR
    identity = " ".join(
        f"GIT_{who}_{key}={shlex.quote(value)}"
        for who in ("AUTHOR", "COMMITTER")
        for key, value in (("NAME", name), ("EMAIL", email), ("DATE", bundled.COMMIT_DATE))
    )
    message = shlex.quote(f"SWE-smith instance {task.instance_id}")
    # The index's file stats are the build's (refreshed, or `git apply --index` sees every file changed);
    # --soft: the index and work tree already hold the commit; files the install changed stay as they are.
    script = (
        f"set -e; cd {shlex.quote(cfg.workdir)}; git update-index -q --refresh || true; "
        f"git apply --index {BUG_PATCH_PATH}; rm -f {BUG_PATCH_PATH}; "
        f'tree=$(git write-tree); sha=$({identity} git commit-tree "$tree" -m {message}); '
        f'git reset -q --soft "$sha"; mkdir -p .git/info; '
        f"printf %s {shlex.quote(bundled.GIT_EXCLUDE)} >> .git/info/exclude; {bundled.EXCLUDE_UNTRACKED}; "
        "git rev-parse HEAD"
    )
    container = client.containers.run(
        source, command=_KEEP_ALIVE, detach=True, labels=build_labels(), network_mode="none"
    )
    try:
        container.put_archive("/tmp", _tar(BUG_PATCH_PATH.rsplit("/", 1)[1], task.bug_patch))
        code, output = container.exec_run(["bash", "-c", script])
        text = output.decode("utf-8", errors="replace").strip()
        if code != 0:
            raise ImageBuildError(
                f"{task.instance_id}: the row's patch does not apply in {cfg.workdir} of {source} "
                f"(exit {code}): {text[-500:]}"
            )
        sha = text.splitlines()[-1]
        repository, version = split_tag(task.image)
        container.commit(
            repository=repository,
            tag=version,
            conf={
                "Labels": {
                    INPUTS_LABEL: inputs,
                    BASE_COMMIT_LABEL: sha,
                    WORKDIR_LABEL: cfg.workdir,
                    **{label: "" for label in CONTAINER_LABELS},
                },
                "Cmd": source_image.attrs["Config"].get("Cmd") or ["/bin/bash"],
                # the harness's containers ignore SIGTERM; see bundled._stop_with_sigkill
                "StopSignal": "SIGKILL",
            },
        )
    finally:
        container.remove(force=True)
    log.info("made %s: %s with the bug of %s at %s", task.image, source, task.instance_id, sha[:12])
    return task.image


def _tar(name: str, text: str) -> bytes:
    data = text.encode("utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
