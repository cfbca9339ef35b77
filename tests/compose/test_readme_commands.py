"""The README's compose commands stay runnable as written, for both compose versions.

Every ``docker-compose`` (v1) command in the README's "Docker Compose" section
has its ``docker compose`` (v2) twin; the v1 one is
checked here against the installed docker-compose (its files load with its
environment, its flags exist), and its flags against v2's reference. The
commands themselves run in test_compose.py (scale) and were run by hand.
Needs only the docker-compose CLI, no engine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = os.environ.get("ATLS_REQUIRE_DOCKER") == "1"

# Flags of v2 (docs/reference/compose_{up,down,logs}.md in docker/compose)
# that the README may use; anything else must be checked before it is added.
V2_FLAGS = {
    "up": {"-d", "--detach", "--exit-code-from", "--scale", "--remove-orphans", "-t", "--timeout"},
    "down": {"-v", "--volumes", "--remove-orphans", "-t", "--timeout"},
    "logs": {"-f", "--follow", "--tail", "--timestamps"},
}


def _commands() -> list[str]:
    """The compose command lines of the README's Docker Compose section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Docker Compose\n", 1)[1].split("\n## ", 1)[0]
    return [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if "docker-compose -f" in line or "docker compose -f" in line
    ]


@cache
def _usage(command: str) -> str:
    return subprocess.run(
        ["docker-compose", command, "--help"], capture_output=True, text=True
    ).stdout


LINES = _commands()
V1 = [line for line in LINES if "docker-compose " in line]


def test_readme_gives_each_compose_command_for_both_versions():
    assert len(V1) >= 10, LINES
    v2 = sorted(line for line in LINES if "docker compose " in line)
    assert v2 == sorted(line.replace("docker-compose ", "docker compose ", 1) for line in V1)


@pytest.mark.parametrize("line", V1, ids=lambda line: line[:70])
def test_readme_v1_command_is_valid(line, tmp_path):
    if not shutil.which("docker-compose"):
        if REQUIRED:
            pytest.fail("docker-compose (v1) is required here (ATLS_REQUIRE_DOCKER=1)")
        pytest.skip("docker-compose (v1) not installed")
    words = shlex.split(line.replace("$PWD", str(tmp_path)))
    env = dict(os.environ)
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[0] == "docker-compose"
    files, rest, i = [], [], 1
    while i < len(words):
        if words[i] in ("-f", "-p"):
            if words[i] == "-f":
                files.append(words[i + 1])
            i += 2
        else:
            rest.append(words[i])
            i += 1
    command, args = rest[0], rest[1:]
    assert files and files[0] == "compose/docker-compose.yml", "v1 needs -f on every command"
    base = ["docker-compose", *(a for f in files for a in ("-f", f))]
    config = subprocess.run(
        [*base, "config", "--services"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert config.returncode == 0, config.stderr
    services = set(config.stdout.split())
    usage = _usage(command)
    for j, arg in enumerate(args):
        if arg.startswith("-"):
            assert re.search(rf"(^|[\s,]){re.escape(arg)}\b", usage), f"v1 {command} has no {arg}"
            assert arg in V2_FLAGS[command], f"{arg} not known to be in v2 {command}"
        elif j and args[j - 1] == "--exit-code-from" or command == "logs":
            assert arg in services, f"no service {arg}"
        elif "=" in arg:  # --scale SERVICE=N
            assert arg.split("=")[0] in services, f"no service in {arg}"
    if "--scale" in args:
        scale = args[args.index("--scale") + 1].split("=")[1]
        assert env.get("ATLS_DEVICES") == scale, "--scale device=N goes with ATLS_DEVICES=N"
    if "ATLS_REPORTS" in env and env["ATLS_REPORTS"] != os.environ.get("ATLS_REPORTS"):
        assert Path(env["ATLS_REPORTS"]).is_absolute(), (
            "compose resolves relative paths in compose/"
        )
