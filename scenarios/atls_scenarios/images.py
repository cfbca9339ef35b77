"""Build the testbed image, online (a registry) or offline (no registry at all).

Offline, for labs whose Docker can pull nothing:
1. base image ``atls-testbed-base:trixie-<hash of the package list>``:
   ``debootstrap`` of Debian trixie (Python 3.13) into a temporary directory,
   then ``docker import``;
2. wheelhouse ``compose/wheelhouse/``: every wheel the image needs, built by
   pip on the host with this interpreter (which must be CPython 3.13, the
   base's Python, so the wheels fit);
3. ``docker build`` with ``OFFLINE=1``: pip installs with ``--no-index`` from it.

The interop runner's compose engine also needs ``atls-interop-peers``: a
runtime-only Debian *bookworm* image (``debootstrap`` + ``docker import``,
tagged ``bookworm-<hash of the package list>`` and ``latest``) for the foreign
peers, which are built on the host into ``interop/.build/`` against the host's
bookworm libraries (OpenSSL 3.0, GnuTLS 3.7, wolfSSL 5.5, mbedTLS 2.28, Node 18,
OpenJDK 17 with Bouncy Castle 1.72). No compilers: the peers run from the
mounted checkout.
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
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Runtime libraries of the host-built foreign interop peers (ldd interop/.build/*/atls-*),
# the JRE and the Bouncy Castle jars on bouncycastle/run.sh's classpath, and Node.
PEERS_PACKAGES = ",".join(
    [
        "bash",
        "ca-certificates",
        "libssl3",  # openssl (and libcurl's TLS)
        "libgnutls30",  # gnutls
        "libwolfssl35",  # wolfssl
        "libmbedtls14",  # mbedtls
        "libmbedx509-1",
        "libmbedcrypto7",
        "libcurl4",  # the C peers' client carrier
        "libmicrohttpd12",  # the C peers' server carrier
        "openjdk-17-jre-headless",  # jsse, bouncycastle
        "libbcprov-java",  # bouncycastle's classpath: /usr/share/java/bc{prov,tls,util}.jar
        "libbctls-java",
        "libbcutil-java",
        "nodejs",  # node (bookworm: Node 18)
    ]
)
# Left out of the peers image (about 220 MB): apt's downloaded .debs and lists, docs, locales.
PEERS_PRUNE = (
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*_*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/locale/*",
)
PEERS_TAG = "atls-interop-peers:latest"
# The tag names the recipe (packages and pruning): a changed recipe builds a new image.
PEERS_IMAGE = (
    "atls-interop-peers:bookworm-"
    + hashlib.sha256((PEERS_PACKAGES + " ".join(PEERS_PRUNE)).encode()).hexdigest()[:8]
)


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


def _debootstrap_import(
    suite: str,
    packages: str,
    tag: str,
    say: Callable[[str], None],
    mirror: str,
    minutes: str,
    prune: tuple[str, ...] = (),
) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="atls-rootfs-") as tmp:
        rootfs = Path(tmp) / suite
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={packages}",
                suite,
                str(rootfs),
                mirror,
            ],
            say,
            f"debootstrap Debian {suite} ({minutes})",
        )
        for pattern in prune:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run(
            ["docker", "import", "--change", PATH_ENV, "-", tag],
            say,
            f"docker import as {tag}",
            stdin=tar.stdout,
        )
        tar.wait()


def build_offline_base(say: Callable[[str], None], mirror: str = DEBIAN_MIRROR) -> None:
    if image_exists(OFFLINE_BASE):
        say(f"[images] base {OFFLINE_BASE} already present")
        return
    _debootstrap_import("trixie", BASE_PACKAGES, OFFLINE_BASE, say, mirror, "about a minute")


def build_peers_image(say: Callable[[str], None] = print, mirror: str = DEBIAN_MIRROR) -> str:
    """``atls-interop-peers:bookworm-<hash>`` (and ``:latest``) for the foreign interop peers."""
    if shutil.which("docker") is None:
        raise ImageError("the docker CLI is not installed")
    if image_exists(PEERS_IMAGE):
        say(f"[images] {PEERS_IMAGE} already present")
    else:
        _debootstrap_import(
            "bookworm",
            PEERS_PACKAGES,
            PEERS_IMAGE,
            say,
            mirror,
            "a minute or more: the JRE",
            prune=PEERS_PRUNE,
        )
    _run(["docker", "tag", PEERS_IMAGE, PEERS_TAG], say, f"docker tag {PEERS_TAG}")
    say(f"[images] built {PEERS_IMAGE} (also {PEERS_TAG})")
    return PEERS_IMAGE


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
