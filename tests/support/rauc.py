"""A RAUC system for the firmware tests: Debian's RAUC 1.8 service on a D-Bus bus of the test's own, two
raw slots that are files, a custom bootloader backend (a shell script keeping its state in a file), and
plain bundles signed with a test key. :meth:`RaucSystem.power_on` is what the board's bootloader does
at each boot (the supervisor calls it before starting the agent): boot the primary slot if it is good,
else try it once (the primary goes back to the other slot), then start RAUC's service on that slot."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BACKEND = """#!/bin/sh
STATE="$(dirname "$0")/boot.state"
. "$STATE"
case "$1" in
  get-primary) echo "$primary" ;;
  set-primary) sed -i "s/^primary=.*/primary=$2/" "$STATE" ;;
  get-state) eval echo "\\$state_$2" ;;
  set-state) sed -i "s/^state_$2=.*/state_$2=$3/" "$STATE" ;;
  get-current) echo "$primary" ;;
  *) exit 1 ;;
esac
"""

BUS = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/>
    <allow send_type="method_return"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/>
    <allow receive_type="method_return"/><allow receive_type="error"/>
  </policy>
</busconfig>
"""


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test bundles")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "signing.key.pem", directory / "signing.cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class RaucSystem:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "bus.sock"
        self.bus = f"unix:path={self.socket}"
        self.key, self.cert = _certificate(directory)
        self.state = directory / "boot.state"
        self._bus: subprocess.Popen[bytes] | None = None
        self._service: subprocess.Popen[bytes] | None = None
        self.booted = "A"

    def start(self) -> RaucSystem:
        for name in ("a", "b"):
            (self.dir / f"slot-{name}.img").write_bytes(bytes(8 * 1024 * 1024))
        backend = self.dir / "backend.sh"
        backend.write_text(BACKEND)
        backend.chmod(0o755)
        self.state.write_text("primary=A\nstate_A=good\nstate_B=bad\n")
        (self.dir / "system.conf").write_text(
            "[system]\ncompatible=edge-test\nbootloader=custom\n"
            f"data-directory={self.dir / 'rauc-data'}\nbundle-formats=plain\n\n"
            f"[handlers]\nbootloader-custom-backend={backend}\n\n[keyring]\npath={self.cert}\n\n"
            f"[slot.rootfs.0]\ndevice={self.dir / 'slot-a.img'}\ntype=raw\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={self.dir / 'slot-b.img'}\ntype=raw\nbootname=B\n"
        )
        (self.dir / "bus.conf").write_text(BUS.format(socket=self.socket))
        self._bus = subprocess.Popen(
            ["dbus-daemon", "--nofork", f"--config-file={self.dir / 'bus.conf'}"], stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert time.monotonic() < deadline, "dbus-daemon made no socket"
            time.sleep(0.01)
        self.power_on()
        return self

    def _state(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.state.read_text().split() if "=" in line)

    def power_on(self) -> str:
        """The bootloader at power-on (module docstring); then RAUC's service on the slot booted."""
        state = self._state()
        primary = state["primary"]
        if state.get(f"state_{primary}") != "good":  # a try: spent by this boot
            other = "A" if primary == "B" else "B"
            self.state.write_text(self.state.read_text().replace(f"primary={primary}", f"primary={other}"))
        self.booted = primary
        self._stop_service()
        with (self.dir / "rauc-service.log").open("ab") as log:
            self._service = subprocess.Popen(
                ["rauc", "service", f"--conf={self.dir / 'system.conf'}", f"--override-boot-slot={primary}"],
                env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:  # until the service answers on the bus
            done = subprocess.run(
                ["rauc", "status", "--output-format=json"],
                env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                capture_output=True,
                check=False,
            )
            if done.returncode == 0:
                return primary
            assert time.monotonic() < deadline, f"the RAUC service did not answer: {done.stderr!r}"
            time.sleep(0.05)

    def bundle(self, directory: Path, version: str, size: int = 3 * 1024 * 1024) -> Path:
        content = directory / "bundle-content"
        shutil.rmtree(content, ignore_errors=True)
        content.mkdir(parents=True)
        (content / "rootfs.img").write_bytes(os.urandom(size))
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible=edge-test\nversion={version}\n\n[bundle]\nformat=plain\n\n"
            "[image.rootfs]\nfilename=rootfs.img\n"
        )
        bundle = directory / "r29.raucb"
        bundle.unlink(missing_ok=True)
        subprocess.run(
            ["rauc", "bundle", f"--cert={self.cert}", f"--key={self.key}", str(content), str(bundle)],
            check=True,
            capture_output=True,
        )
        return bundle

    def _stop_service(self) -> None:
        if self._service is not None and self._service.poll() is None:
            self._service.terminate()
            self._service.wait(10)

    def stop(self) -> None:
        self._stop_service()
        if self._bus is not None:
            self._bus.terminate()
            self._bus.wait(10)
