"""The TLS files, as ``edge-agent doctor`` checks them (cryptography's X.509: each certificate in date) and
as a running daemon does for ``collect_diagnostics`` (the standard library's ``ssl`` alone: the daemon
never imports cryptography, whose ~10 MiB would stay with it after the first request)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.config import load_config
from agent.runtime import doctor
from tests.support.daemons import device_config
from tests.support.pki import make_pki

DEVICE = "0c110512ab34"


def _config(tmp_path: Path, root_pem: Path, **tls: str) -> Path:
    return device_config(tmp_path / "device", "mqtts://127.0.0.1:8883", root_pem, mqtt=tls)


def test_a_daemon_checks_its_tls_files_without_importing_cryptography(tmp_path: Path, root_pem: Path) -> None:
    """The daemon's modules and its diagnostics, in a fresh interpreter: the CA file loads and is in date
    (the test CA ends in two days: a warning), the client certificate loads with its key; cryptography is
    never imported."""
    pki = make_pki(tmp_path / "pki", DEVICE)
    config_file = _config(tmp_path, root_pem, ca_file=str(pki.ca), cert_file=str(pki.device.cert),
                          key_file=str(pki.device.key))  # fmt: skip
    script = (
        "import json, sys\n"
        "import agent.daemon\n"
        "from pathlib import Path\nfrom agent.config import load_config\n"
        "from agent.runtime import diagnostics\n"
        f"config = load_config(Path({str(config_file)!r}), {{}})\n"
        "report = diagnostics.collect(config, None, False, {}, 0)\n"
        "print(json.dumps({'doctor': report['doctor'], 'cryptography': sorted(m for m in sys.modules"
        " if m.split('.')[0] == 'cryptography')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["cryptography"] == []
    by_check = {f["check"]: f for f in found["doctor"]}
    assert by_check["CA file"]["status"] == "warn"
    assert "expires in 1 days" in by_check["CA file"]["detail"]
    assert by_check["client certificate"] == {
        "check": "client certificate", "status": "ok", "detail": f"{pki.device.cert}, with its key",
    }  # fmt: skip


def test_tls_files_that_cannot_work_are_named(tmp_path: Path, root_pem: Path) -> None:
    """Not a certificate; a client certificate with another certificate's key: each a failure naming the file."""
    pki = make_pki(tmp_path / "pki", DEVICE)
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    config = load_config(
        _config(tmp_path, root_pem, ca_file=str(garbage), cert_file=str(pki.device.cert), key_file=str(pki.cloud.key)),
        {},
    )
    by_check = {f.check: f for f in doctor.tls_files(config)}
    assert by_check["CA file"].status == "fail"
    assert str(garbage) in by_check["CA file"].detail
    assert by_check["client certificate"].status == "fail"
    assert "KEY_VALUES_MISMATCH" in by_check["client certificate"].detail


def test_doctor_reads_each_certificates_dates(tmp_path: Path, root_pem: Path) -> None:
    """``edge-agent doctor``: the client certificate's own end too (a day away in the test PKI: a warning)."""
    pki = make_pki(tmp_path / "pki", DEVICE)
    config = load_config(
        _config(tmp_path, root_pem, ca_file=str(pki.ca), cert_file=str(pki.device.cert), key_file=str(pki.device.key)),
        {},
    )
    by_check = {f.check: f for f in doctor.certificates(config)}
    assert by_check["CA file"].status == "warn"
    assert by_check["client certificate"].status == "warn"
    assert "expires in 0 days" in by_check["client certificate"].detail
