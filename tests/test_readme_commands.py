"""Every command the README shows runs as written: the job exists and its parser knows each flag,
the config files it names exist, and each `make` target and variable is in the Makefile.

A README command that drifted from the code is the first thing a new user runs into; the jobs'
`--help` runs in this process (the suite has imported torch and Ray already)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOB = re.compile(r"python (jobs/(\w+)\.py)(.*)")
MAKE = re.compile(r"^make ([\w-]+)(.*)")


def _commands() -> list[str]:
    """The README's fenced lines, continuations joined and comments dropped."""
    lines, fenced, pending = [], False, ""
    for raw in (ROOT / "README.md").read_text().splitlines():
        if raw.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if not fenced:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        for command in re.split(r"\s*(?:&&|;)\s*", re.sub(r"\s+#\s.*$", "", line)):
            if JOB.search(command) or MAKE.match(command):
                lines.append(command)
    return lines


COMMANDS = _commands()


@functools.cache
def _help(name: str) -> str:
    """The job's --help text, from its own main()."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        importlib.import_module(f"jobs.{name}").main(["--help"])
    assert done.value.code in (0, None), f"jobs/{name}.py --help exited {done.value.code}"
    return out.getvalue()


def _makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", text, flags=re.M))
    variables = set(re.findall(r"\$\((\w+)\)", text)) | set(re.findall(r"^(\w+)\s*[:?]?=", text, flags=re.M))
    return targets, variables


def test_the_readme_shows_the_jobs_and_targets():
    jobs = {m.group(2) for c in COMMANDS if (m := JOB.search(c))}
    assert {"prepare", "train", "fit", "tune", "serve", "plan", "benchmark"} <= jobs, jobs
    assert any(MAKE.match(c) for c in COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if JOB.search(c)])
def test_job_command_matches_its_parser_and_files(command):
    path, name, rest = JOB.search(command).groups()
    assert (ROOT / path).is_file(), f"{command!r}: no {path}"
    usage = _help(name)
    words = shlex.split(rest.replace("[", " ").replace("]", " ").replace("|", " "))
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"{re.escape(flag)}\b", usage), f"{command!r}: jobs/{name}.py does not know {flag}"
    for flag, value in zip(words, words[1:]):
        if flag == "--config" and value.startswith("configs/"):
            assert (ROOT / value).is_file(), f"{command!r}: no {value}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if MAKE.match(c)])
def test_make_command_names_a_target_and_its_variables(command):
    targets, variables = _makefile()
    target, rest = MAKE.match(command).groups()
    assert target in targets, f"{command!r}: the Makefile has no target {target}"
    for var in re.findall(r"\b([A-Z][A-Z_]+)=", rest):
        assert var in variables, f"{command!r}: the Makefile does not read {var}"
    for value in re.findall(r"CONFIG=(\S+)", rest):
        assert (ROOT / value).is_file(), f"{command!r}: no {value}"
