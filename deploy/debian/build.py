"""The Debian package of the edge agent, for amd64 or arm64 (``make deb ARCH=arm64``), built on any machine:
no compiler, no emulation, nothing but pip and dpkg-deb.

- ``/usr/lib/edge-agent``: the agent (this project's wheel, without the cloud's code) and the libraries it
  runs with, installed by pip from the wheels PyPI publishes for the target (``--platform``,
  ``--only-binary=:all:``), at the versions of ``constraints.txt``; byte-compiled on the board by the
  postinst (as Debian's py3compile does; the prerm removes the caches), so that nothing is written there
  at run time under ``ProtectSystem=strict``.
- ``/usr/bin/edge-agent``: the system's python3 in isolated mode (``-I``: no PYTHONPATH, no user site)
  running the agent from there.
- the unit (``/lib/systemd/system``), its drop-ins as examples, sysusers.d and tmpfiles.d entries, man pages,
  shell completions, ``/etc/edge-agent/agent.toml`` (a conffile), docs and maintainer scripts
  (``deploy/debian/``).

    python deploy/debian/build.py --arch arm64 [--out dist]    # prints the .deb's path
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
HERE: Final = Path(__file__).resolve().parent
MACHINES: Final = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC: Final = 36  # Debian bookworm's glibc is 2.36: a manylinux wheel for 2.17 to 2.36 runs there


def _platforms(arch: str) -> list[str]:
    """pip's --platform for each manylinux tag the target's glibc runs (pip does not widen one tag itself)."""
    machine = MACHINES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC, 16, -1)] + [f"manylinux2014_{machine}"]
    return [option for tag in tags for option in ("--platform", tag)]


NOT_SHIPPED: Final = ("cloud_stub", "demo", "bin")  # the cloud and the demo are not the device's
REVISION: Final = "1"  # the Debian revision of this packaging


def _version() -> str:
    """The agent's version (``agent.__version__``, which pyproject.toml reads too) and the revision."""
    import re

    found = re.search(r'^__version__ = "([0-9][0-9A-Za-z.+~-]*)"$', (REPO / "agent" / "__init__.py").read_text(), re.M)
    if found is None:
        sys.exit("build.py: agent/__init__.py states no __version__")
    return f"{found[1]}-{REVISION}"


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"build.py: pip {args[0]} failed:\n{done.stdout}{done.stderr}")


def _libraries(root: Path, arch: str, work: Path) -> None:
    """The agent and its libraries (with the hardware extra: libosdp, pymodbus, pyserial) for ``arch``."""
    _pip("wheel", "--no-deps", "-w", str(work / "wheel"), str(REPO))
    [wheel] = (work / "wheel").glob("smartplus_edge-*.whl")
    target = root / "usr" / "lib" / "edge-agent"
    _pip(
        "install", "--target", str(target), "--no-compile", "--only-binary=:all:", *_platforms(arch),
        "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
        "-c", str(REPO / "constraints.txt"), f"{wheel}[hardware]",
    )  # fmt: skip
    for name in NOT_SHIPPED:
        shutil.rmtree(target / name, ignore_errors=True)
    for module in target.rglob("*.py"):  # "#!/usr/bin/env python" atop library modules: Debian's python3
        text = module.read_bytes()
        if text.startswith(b"#!") and b"python" in text.split(b"\n", 1)[0]:
            module.write_bytes(b"#!/usr/bin/python3" + text[text.index(b"\n") :])


def _install(source: Path, destination: Path, mode: int = 0o644, *, zipped: bool = False) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    if zipped:  # gzip -9n: no name, no time (reproducible, as dh_compress does)
        data = gzip.compress(data, 9, mtime=0)
    destination.write_bytes(data)
    destination.chmod(mode)


def _files(root: Path) -> None:
    deploy = REPO / "deploy"
    _install(deploy / "systemd" / "edge-agent.service", root / "lib/systemd/system/edge-agent.service")
    _install(deploy / "systemd" / "sysusers.d" / "edge-agent.conf", root / "usr/lib/sysusers.d/edge-agent.conf")
    _install(deploy / "systemd" / "tmpfiles.d" / "edge-agent.conf", root / "usr/lib/tmpfiles.d/edge-agent.conf")
    doc = root / "usr/share/doc/edge-agent"
    for drop_in in sorted((deploy / "systemd" / "edge-agent.service.d").glob("*.conf")):
        _install(drop_in, doc / "examples/systemd" / drop_in.name)
    _install(deploy / "udev" / "90-edge-agent-slots.rules", doc / "examples/udev/90-edge-agent-slots.rules")
    _install(REPO / "docs" / "operations.md", doc / "operations.md")
    _install(HERE / "copyright", doc / "copyright")
    _install(HERE / "changelog", doc / "changelog.Debian.gz", zipped=True)
    _install(HERE / "lintian-overrides", root / "usr/share/lintian/overrides/edge-agent")
    for page in sorted((deploy / "man").glob("edge-agent*.1")):
        _install(page, root / "usr/share/man/man1" / f"{page.name}.gz", zipped=True)
    completions = deploy / "completions"
    _install(completions / "edge-agent.bash", root / "usr/share/bash-completion/completions/edge-agent")
    _install(completions / "edge-agent.zsh", root / "usr/share/zsh/vendor-completions/_edge-agent")
    _install(completions / "edge-agent.fish", root / "usr/share/fish/vendor_completions.d/edge-agent.fish")
    _install(HERE / "agent.toml", root / "etc/edge-agent/agent.toml")
    launcher = root / "usr/bin/edge-agent"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(
        "#!/usr/bin/python3 -I\n"
        '"""edge-agent, installed by the edge-agent package in /usr/lib/edge-agent (docs/operations.md)."""\n\n'
        "import sys\n\n"
        'sys.path.insert(0, "/usr/lib/edge-agent")\n\n'
        "from agent.cli import main\n\n"
        "sys.exit(main())\n"
    )
    launcher.chmod(0o755)


def _control(root: Path, arch: str) -> None:
    debian = root / "DEBIAN"
    debian.mkdir()
    size_kib = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
    (debian / "control").write_text(
        (HERE / "control.in").read_text().format(version=_version(), arch=arch, installed_size=size_kib)
    )
    (debian / "conffiles").write_text("/etc/edge-agent/agent.toml\n")
    for script in ("postinst", "prerm", "postrm"):
        _install(HERE / script, debian / script, 0o755)


def build(arch: str, out: Path) -> Path:
    """The package for ``arch`` in ``out``; its path."""
    if arch not in MACHINES:
        sys.exit(f"build.py: --arch is one of {', '.join(MACHINES)}, not {arch!r}")
    out.mkdir(parents=True, exist_ok=True)
    package = out / f"edge-agent_{_version()}_{arch}.deb"
    with tempfile.TemporaryDirectory(prefix="edge-agent-deb-") as scratch:
        work = Path(scratch)
        root = work / "root"
        _libraries(root, arch, work)
        _files(root)
        _control(root, arch)
        for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            directory.chmod(0o755)
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(package)], check=True,
                       capture_output=True)  # fmt: skip
    return package


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the edge-agent Debian package.")
    parser.add_argument("--arch", default="amd64", choices=sorted(MACHINES))
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    arguments = parser.parse_args()
    print(build(arguments.arch, arguments.out))


if __name__ == "__main__":
    main()
