"""The `str_replace_editor` program that runs INSIDE the container (python3, standard library only).

`tools.py` sends this file's source to `python3 -c` through the environment's shell, with the call's
arguments as base64 JSON on stdin, so files are read and written where they live and nothing on the
host is touched. Messages follow SWE-agent's / OpenHands' editor word for word where expert
trajectories rely on them. Undo history is kept in the container at HISTORY (cleared by a warm reset).

Exit status: 0 on success, 1 when the call was refused (the message says why).
"""

# Written for any python3 a task image may have (3.5+): %-formatting, no f-strings.
# ruff: noqa: UP031, UP021, UP022, PLW1510

import base64
import json
import os
import subprocess
import sys

HISTORY = "/tmp/.srl-editor/history.json"
SNIPPET_LINES = 4
MAX_RESPONSE_LEN = 16000
TRUNCATED_NOTE = (
    "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should "
    "retry this tool after you have searched inside the file with `grep -n` in order to find the line "
    "numbers of what you are looking for.</NOTE>"
)
COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")


class Refused(Exception):
    pass


def numbered(text, descriptor, first_line=1):
    if len(text) > MAX_RESPONSE_LEN:
        text = text[:MAX_RESPONSE_LEN] + TRUNCATED_NOTE
    lines = text.expandtabs().split("\n")
    body = "\n".join("%6d\t%s" % (first_line + i, line) for i, line in enumerate(lines))
    return "Here's the result of running `cat -n` on %s:\n%s\n" % (descriptor, body)


def read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"  # round-trips every byte


def write_text(path, text, encoding):
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)


def load_history():
    try:
        with open(HISTORY, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def push_history(path, text):
    history = load_history()
    history.setdefault(path, []).append(text)
    history[path] = history[path][-10:]
    os.makedirs(os.path.dirname(HISTORY), exist_ok=True)
    with open(HISTORY, "w", encoding="utf-8") as f:
        json.dump(history, f)


def check_path(command, path):
    if not os.path.isabs(path):
        raise Refused(
            "The path %s is not an absolute path, it should start with `/`. Maybe you meant %s?"
            % (path, os.path.join(os.getcwd(), path))
        )
    if command != "create" and not os.path.exists(path):
        raise Refused("The path %s does not exist. Please provide a valid path." % path)
    if command == "create" and os.path.exists(path):
        raise Refused("File already exists at: %s. Cannot overwrite files using command `create`." % path)
    if os.path.isdir(path) and command != "view":
        raise Refused(
            "The path %s is a directory and only the `view` command can be used on directories" % path
        )


def view(path, view_range):
    if os.path.isdir(path):
        if view_range:
            raise Refused("The `view_range` parameter is not allowed when `path` points to a directory.")
        found = subprocess.run(
            ["find", path, "-maxdepth", "2", "-not", "-path", "*/.*"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        )  # fmt: skip
        listing = "\n".join(sorted(found.stdout.splitlines()))
        return "Here's the files and directories up to 2 levels deep in %s, excluding hidden items:\n%s\n" % (
            path, listing)  # fmt: skip
    text, _ = read_text(path)
    if not view_range:
        return numbered(text, path)
    if isinstance(view_range, str):
        try:
            view_range = json.loads(view_range)
        except ValueError:
            view_range = None
    if (
        not isinstance(view_range, list)
        or len(view_range) != 2
        or not all(type(i) is int for i in view_range)
    ):
        raise Refused("Invalid `view_range`. It should be a list of two integers.")
    lines = text.split("\n")
    first, last = view_range
    if first < 1 or first > len(lines):
        raise Refused(
            "Invalid `view_range`: %s. Its first element `%d` should be within the range of lines of the "
            "file: %s" % (view_range, first, [1, len(lines)])
        )
    if last > len(lines):
        raise Refused(
            "Invalid `view_range`: %s. Its second element `%d` should be smaller than the number of lines "
            "in the file: `%d`" % (view_range, last, len(lines))
        )
    if last != -1 and last < first:
        raise Refused(
            "Invalid `view_range`: %s. Its second element `%d` should be larger or equal than its first `%d`"
            % (view_range, last, first)
        )
    last = len(lines) if last == -1 else last
    return numbered("\n".join(lines[first - 1 : last]), path, first)


def create(path, file_text):
    if file_text is None:
        raise Refused("Parameter `file_text` is required for command: create")
    if not os.path.isdir(os.path.dirname(path)):
        raise Refused(
            "The parent directory %s does not exist. Please create it first." % os.path.dirname(path)
        )
    write_text(path, file_text, "utf-8")
    push_history(path, None)
    return "File created successfully at: %s" % path


def str_replace(path, old_str, new_str):
    if old_str is None:
        raise Refused("Parameter `old_str` is required for command: str_replace")
    new_str = "" if new_str is None else new_str
    text, encoding = read_text(path)
    original = text
    if text.count(old_str) == 0 and "\t" in text + old_str:
        # SWE-agent compares with tabs expanded (its views show them expanded); do the same as a fallback.
        text, old_str, new_str = text.expandtabs(), old_str.expandtabs(), new_str.expandtabs()
    occurrences = text.count(old_str)
    if occurrences == 0:
        raise Refused(
            "No replacement was performed, old_str `%s` did not appear verbatim in %s." % (old_str, path)
        )
    if occurrences > 1:
        lines = [i + 1 for i, line in enumerate(text.split("\n")) if old_str in line]
        if not lines:  # a multi-line old_str: report the lines where each occurrence starts
            starts, at = [], text.find(old_str)
            while at != -1:
                starts.append(text.count("\n", 0, at) + 1)
                at = text.find(old_str, at + 1)
            lines = starts
        raise Refused(
            "No replacement was performed. Multiple occurrences of old_str `%s` in lines %s. "
            "Please ensure it is unique" % (old_str, lines)
        )
    if new_str == old_str:
        raise Refused(
            "No replacement was performed, old_str `%s` is the same as new_str `%s`." % (old_str, new_str)
        )
    new_text = text.replace(old_str, new_str)
    write_text(path, new_text, encoding)
    push_history(path, original)
    replaced_at = text.split(old_str)[0].count("\n")
    first = max(1, replaced_at - SNIPPET_LINES)
    last = min(replaced_at + SNIPPET_LINES + new_str.count("\n"), len(new_text.splitlines()))
    snippet = "\n".join(new_text.split("\n")[first - 1 : last])
    return (
        "The file %s has been edited. " % path
        + numbered(snippet, "a snippet of %s" % path, first)
        + "Review the changes and make sure they are as expected. Edit the file again if necessary."
    )


def insert(path, insert_line, new_str):
    if insert_line is None:
        raise Refused("Parameter `insert_line` is required for command: insert")
    if new_str is None:
        raise Refused("Parameter `new_str` is required for command: insert")
    text, encoding = read_text(path)
    lines = text.split("\n")
    try:
        line = int(insert_line)
    except (TypeError, ValueError):
        line = -1
    if line < 0 or line > len(lines):
        raise Refused(
            "Invalid `insert_line` parameter: %s. It should be within the range of lines of the file: %s"
            % (insert_line, [0, len(lines)])
        )
    new_lines = new_str.split("\n")
    write_text(path, "\n".join(lines[:line] + new_lines + lines[line:]), encoding)
    push_history(path, text)
    snippet = lines[max(0, line - SNIPPET_LINES) : line] + new_lines + lines[line : line + SNIPPET_LINES]
    return (
        "The file %s has been edited. " % path
        + numbered("\n".join(snippet), "a snippet of the edited file", max(1, line - SNIPPET_LINES + 1))
        + "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, "
        "etc). Edit the file again if necessary."
    )


def undo_edit(path):
    history = load_history()
    if not history.get(path):
        raise Refused("No edit history found for %s." % path)
    previous = history[path].pop()
    os.makedirs(os.path.dirname(HISTORY), exist_ok=True)
    with open(HISTORY, "w", encoding="utf-8") as f:
        json.dump(history, f)
    if previous is None:  # the last edit created the file
        os.remove(path)
        return "Last edit to %s undone successfully. The file was removed." % path
    _, encoding = read_text(path)
    write_text(path, previous, encoding)
    return "Last edit to %s undone successfully. %s" % (path, numbered(previous, path))


def main():
    args = json.loads(base64.b64decode(sys.stdin.read()).decode("utf-8"))
    command, path = args.get("command"), args.get("path")
    try:
        if command not in COMMANDS:
            raise Refused(
                "Unrecognized command %s. The allowed commands for the str_replace_editor tool are: %s"
                % (command, ", ".join('"%s"' % c for c in COMMANDS))
            )
        if not isinstance(path, str) or not path:
            raise Refused("Parameter `path` is required for command: %s" % command)
        check_path(command, path)
        if command == "view":
            message = view(path, args.get("view_range"))
        elif command == "create":
            message = create(path, args.get("file_text"))
        elif command == "str_replace":
            message = str_replace(path, args.get("old_str"), args.get("new_str"))
        elif command == "insert":
            message = insert(path, args.get("insert_line"), args.get("new_str"))
        else:
            message = undo_edit(path)
    except Refused as refused:
        sys.stdout.write(str(refused))
        sys.exit(1)
    except OSError as e:
        sys.stdout.write("Ran into %s while running %s on %s" % (e, command, path))
        sys.exit(1)
    sys.stdout.write(message)


if __name__ == "__main__":
    main()
