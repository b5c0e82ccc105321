"""Build and drive the demo DogBank stack (busybox stand-ins) without any image registry.

No registry is reachable where this runs, so the base image is made from the host's static busybox
(Debian's ``busybox-static``) with ``docker import``, and the stand-in image is built FROM it.
Used by ``.ci/run``, the test fixtures and ``par demo``; talks to the real engine through the docker CLI.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from sandbox.errors import Error

BASE_IMAGE = "dogbank/busybox:local"
STANDIN_IMAGE = "dogbank/standin:local"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO_ROOT / "examples" / "dogbank"
COMPOSE_FILE = DEMO_DIR / "docker-compose.full.yml"
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = ("sh", "echo", "sleep", "cat", "ls", "printf", "true", "false", "env", "id", "ps", "kill")


class DemoStackError(Error):
    default_hint = "Install docker.io and busybox-static, start dockerd, then retry."


def _run(argv: list[str], *, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, input=stdin, cwd=cwd, capture_output=True, check=False, timeout=300)
    except FileNotFoundError as exc:
        raise DemoStackError(f"'{argv[0]}' not found on PATH") from exc
    if proc.returncode != 0:
        raise DemoStackError(f"{' '.join(argv[:4])}... failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def _image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


def _static_busybox() -> Path:
    for cand in BUSYBOX_CANDIDATES:
        if cand.exists():
            head = cand.read_bytes()[:4096]
            # A dynamically linked binary names its interpreter; the imported rootfs has no libc.
            if b"ld-linux" not in head:
                return cand
    raise DemoStackError("no statically linked busybox found (apt-get install busybox-static)")


def _rootfs_tar(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "usr", "usr/local", "usr/local/bin"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(passwd), 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def ensure_images(*, rebuild: bool = False) -> None:
    """Make the base and stand-in images if they are missing (idempotent)."""
    if rebuild or not _image_exists(BASE_IMAGE):
        _run(["docker", "import", "-", BASE_IMAGE], stdin=_rootfs_tar(_static_busybox()))
    if rebuild or not _image_exists(STANDIN_IMAGE):
        env_build = ["env", "DOCKER_BUILDKIT=0"] if shutil.which("docker-buildx") is None else []
        _run([*env_build, "docker", "build", "-q", "-t", STANDIN_IMAGE, str(DEMO_DIR / "standin")])


def compose_argv(project: str, compose_file: Path = COMPOSE_FILE) -> list[str]:
    return ["docker", "compose", "-p", project, "-f", str(compose_file)]


SEED_PROJECT = "dogbank"
NETWORK_LABEL = "com.dogbank.demo.network=1"


def seed_network(project: str) -> str | None:
    """The ``<project>_default`` network the seed's set-up checks for, for the seed's own project only."""
    return f"{project}_default" if project == SEED_PROJECT else None


def ensure_network(name: str) -> None:
    """Create ``name`` as an *internal* network with no container attached.

    The real DogBank stack creates ``dogbank_default`` as a side effect of its services joining it; the
    stand-ins run with ``network_mode: none`` (nothing here may send traffic), so the demo creates the
    network explicitly, internal (no route out), so that the seed's checks (`docker network ls | grep
    dogbank_default`) and the deployment's external network reference hold.
    """
    probe = subprocess.run(["docker", "network", "inspect", name], capture_output=True, check=False)
    if probe.returncode != 0:
        _run(["docker", "network", "create", "--internal", "--label", NETWORK_LABEL, name])


def up(project: str, compose_file: Path = COMPOSE_FILE) -> None:
    ensure_images()
    network = seed_network(project)
    if network:
        ensure_network(network)
    _run([*compose_argv(project, compose_file), "up", "--detach", "--wait", "--wait-timeout", "120"])


def down(project: str, compose_file: Path = COMPOSE_FILE) -> None:
    _run([*compose_argv(project, compose_file), "down", "--volumes", "--remove-orphans", "--timeout", "5"])
    network = seed_network(project)
    if network:
        labelled = _run(["docker", "network", "ls", "-q", "--filter", f"name=^{network}$", "--filter",
                         f"label={NETWORK_LABEL}"]).split()
        if labelled:  # only the network this module created, never one the real stack owns
            _run(["docker", "network", "rm", network])


def main(argv: list[str]) -> int:
    """``python -m sandbox._internal.demo_stack images|up|down [PROJECT]`` for .ci/run and people."""
    cmd = argv[0] if argv else "images"
    project = argv[1] if len(argv) > 1 else os.environ.get("PAR_PROJECT", "dogbank")
    try:
        if cmd == "images":
            ensure_images(rebuild="--rebuild" in argv)
        elif cmd == "up":
            up(project)
        elif cmd == "down":
            down(project)
        else:
            print(f"unknown command {cmd!r}: use images, up or down", file=sys.stderr)
            return 2
    except Error as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
