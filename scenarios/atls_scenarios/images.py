"""Build the testbed image, online (a registry) or offline (no registry at all).

Offline, for labs whose Docker can pull nothing:
1. base image ``atls-testbed-base:trixie-<hash of the package list>``:
   ``debootstrap`` of Debian trixie (Python 3.13) into a temporary directory,
   then ``docker import``;
2. wheelhouse ``compose/wheelhouse/``: every wheel the image needs, built by
   pip on the host with this interpreter (which must be CPython 3.13, the
   base's Python, so the wheels fit);
3. ``docker build`` with ``OFFLINE=1``: pip installs with ``--no-index`` from it.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_TAG = "atls-testbed:latest"
BASE_PACKAGES = "python3,python3-venv,ca-certificates,iproute2,iptables,procps,haproxy"
# The base's tag names its package list: a longer list builds a new base beside the old.
OFFLINE_BASE = "atls-testbed-base:trixie-" + hashlib.sha256(BASE_PACKAGES.encode()).hexdigest()[:8]
DEBIAN_MIRROR = "http://deb.debian.org/debian"


class ImageError(RuntimeError):
    """An image could not be built; the message says which step and why."""


def repo_root() -> Path:
    """The checkout holding compose/Dockerfile (images build from a checkout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "compose" / "Dockerfile").exists() and (parent / "pyproject.toml").exists():
            return parent
    raise ImageError(f"images are built from a checkout: compose/Dockerfile not found above {here}")


def _run(argv: list[str], say: Callable[[str], None], what: str, **kw: object) -> None:
    say(f"[images] {what}: {' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''}")
    done = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ImageError(f"{what} failed (exit {done.returncode}):\n{tail}")


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_offline_base(say: Callable[[str], None], mirror: str = DEBIAN_MIRROR) -> None:
    if image_exists(OFFLINE_BASE):
        say(f"[images] base {OFFLINE_BASE} already present")
        return
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="atls-rootfs-") as tmp:
        rootfs = Path(tmp) / "trixie"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "trixie",
                str(rootfs),
                mirror,
            ],
            say,
            "debootstrap Debian trixie (about a minute)",
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run(
            [
                "docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-",
                OFFLINE_BASE,
            ],
            say,
            f"docker import as {OFFLINE_BASE}",
            stdin=tar.stdout,
        )
        tar.wait()


def build_wheelhouse(root: Path, say: Callable[[str], None]) -> Path:
    if sys.version_info[:2] != (3, 13):
        raise ImageError(
            f"the offline wheelhouse must be built with Python 3.13 (the trixie "
            f"base's); this is {platform.python_version()}: set ATLS_PYTHON to a "
            "3.13 interpreter and recreate .venv"
        )
    wheelhouse = root / "compose" / "wheelhouse"
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(wheelhouse),
            f"{root}[middlebox,compose,interop,fleet]",
        ],
        say,
        "wheelhouse for the image",
    )
    count = len(list(wheelhouse.glob("*.whl")))
    say(f"[images] wheelhouse: {count} wheels in {wheelhouse}")
    return wheelhouse


def build_image(
    *,
    offline: bool,
    base: str | None = None,
    tag: str = DEFAULT_TAG,
    say: Callable[[str], None] = print,
) -> str:
    if shutil.which("docker") is None:
        raise ImageError("the docker CLI is not installed")
    root = repo_root()
    args = ["docker", "build", "-f", str(root / "compose" / "Dockerfile"), "-t", tag]
    if offline:
        build_offline_base(say)
        build_wheelhouse(root, say)
        args += ["--build-arg", f"BASE_IMAGE={base or OFFLINE_BASE}", "--build-arg", "OFFLINE=1"]
    elif base:
        args += ["--build-arg", f"BASE_IMAGE={base}"]
    _run([*args, str(root)], say, f"docker build {tag}")
    say(f"[images] built {tag}")
    return tag
