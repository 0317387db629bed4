"""Configuration: TOML plus EDGE_AGENT_* variables, validated once; a bad one is one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.config import Config, load_config, load_trust_roots
from agent.errors import ConfigError

BAD_FILES: list[tuple[str, str, str]] = [
    # (why, a line of TOML replacing or adding a key, the key the error must name)
    ("device_id with colons", 'device_id = "0C:11:05:12:AB:34"', "device_id"),
    ("device_id in upper case", 'device_id = "0C110512AB34"', "device_id"),
    ("device_id a number", "device_id = 12", "device_id"),
    ("model with a space", 'model = "R 29"', "model"),
    ("firmware version not dotted numbers", 'firmware_version = "v29"', "firmware_version"),
    ("no trust roots", "trust_roots = []", "trust_roots"),
    ("a misspelt key", 'devcie_id = "0c110512ab34"', "devcie_id"),
    ("log level unknown", 'log_level = "loud"', "log_level"),
]

BAD_MQTT: list[tuple[str, str, str]] = [
    ("http url", 'url = "http://broker:1883"', "mqtt.url"),
    ("url without host", 'url = "mqtt://"', "mqtt.url"),
    ("url with a bad port", 'url = "mqtt://broker:99999"', "mqtt.url"),
    ("credentials in the url", 'url = "mqtt://u:p@broker"', "mqtt.url"),
    ("topic prefix with a dot", 'topic_prefix = "smartplus/v1.0"', "mqtt.topic_prefix"),
    ("topic prefix with a wildcard", 'topic_prefix = "smartplus/#"', "mqtt.topic_prefix"),
    ("topic prefix with an empty level", 'topic_prefix = "smartplus//v1"', "mqtt.topic_prefix"),
    ("certificate without key", 'cert_file = "c.pem"\nurl = "mqtts://b"', "mqtt"),
    ("CA file on plain mqtt", 'ca_file = "ca.pem"', "mqtt"),
    ("unknown mqtt key", "qos = 2", "mqtt.qos"),
    ("password without a username", 'password = "s3cret"', "mqtt"),
    ("protocol 3.1", 'protocol = "3.1"', "mqtt.protocol"),
    ("keepalive of a second", "keepalive = 1", "mqtt.keepalive"),
    ("backoff upside down", "reconnect_min = 10\nreconnect_max = 1", "mqtt"),
    ("in flight beyond aiomqtt's comfort", "in_flight = 1000", "mqtt.in_flight"),
]


def _replace(config_file: Path, line: str, table: str | None = None) -> Path:
    keys = {entry.split("=")[0].strip() for entry in line.splitlines()}
    out, current = [], None
    for existing in config_file.read_text().splitlines():
        if existing.startswith("["):
            current = existing.strip("[]")
        if current == table and existing.split("=")[0].strip() in keys:
            continue
        out.append(existing)
        if (table is None and existing.startswith("trust_roots")) or existing == f"[{table}]":
            out.append(line)
    config_file.write_text("\n".join(out) + "\n")
    return config_file


def test_the_example_config_loads(config: Config, config_file: Path) -> None:
    """The config in the issue's shape loads; relative trust roots resolve beside the file."""
    assert config.device_id == "0c110512ab34"
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 1883
    assert len(load_trust_roots(config)) == 1
    with pytest.raises(AttributeError, match="immutable"):
        config.model = "X916"  # type: ignore[misc]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, config_file: Path) -> None:
    """trust_roots and data_dir given relative resolve against the config's directory, not the cwd."""
    text = config_file.read_text().replace(str(tmp_path) + "/", "")
    config_file.write_text(text)
    config = load_config(config_file, {})
    assert config.trust_roots == (tmp_path / "root.pub.pem",)
    assert config.data_dir == tmp_path / "data"


@pytest.mark.parametrize(("line", "key"), [r[1:] for r in BAD_FILES], ids=[r[0] for r in BAD_FILES])
def test_a_bad_top_level_key_is_named(config_file: Path, line: str, key: str) -> None:
    """Each bad value is refused with an error naming its key."""
    with pytest.raises(ConfigError) as error:
        load_config(_replace(config_file, line), {})
    assert error.value.key == key, str(error.value)


@pytest.mark.parametrize(("line", "key"), [r[1:] for r in BAD_MQTT], ids=[r[0] for r in BAD_MQTT])
def test_a_bad_mqtt_key_is_named(config_file: Path, line: str, key: str) -> None:
    """Each bad [mqtt] value is refused with an error naming its key."""
    with pytest.raises(ConfigError) as error:
        load_config(_replace(config_file, line, "mqtt"), {})
    assert error.value.key == key, str(error.value)


BAD_METRICS: list[tuple[str, str, str]] = [
    ("address a host name", 'address = "scraper.example"', "metrics.address"),
    ("certificate without key", 'tls_cert = "m.crt"', "metrics"),
    ("client CA without TLS", 'tls_client_ca = "ca.crt"', "metrics"),
    ("port out of range", "port = 70000", "metrics.port"),
]


@pytest.mark.parametrize(("line", "key"), [r[1:] for r in BAD_METRICS], ids=[r[0] for r in BAD_METRICS])
def test_a_bad_metrics_key_is_named(config_file: Path, line: str, key: str) -> None:
    config_file.write_text(config_file.read_text() + "\n[metrics]\n")
    with pytest.raises(ConfigError) as error:
        load_config(_replace(config_file, line, "metrics"), {})
    assert error.value.key == key, str(error.value)


def test_the_metrics_endpoint_may_be_reached_over_mutual_tls(config_file: Path) -> None:
    line = 'port = 9101\naddress = "::"\ntls_cert = "m.crt"\ntls_key = "m.key"\ntls_client_ca = "ca.crt"'
    config_file.write_text(config_file.read_text() + "\n[metrics]\n")
    metrics = load_config(_replace(config_file, line, "metrics"), {}).metrics
    assert (metrics.address, metrics.tls_cert, metrics.tls_client_ca) == (
        "::", config_file.parent / "m.crt", config_file.parent / "ca.crt",
    )  # fmt: skip


def test_environment_overrides_the_file(config_file: Path) -> None:
    """EDGE_AGENT_<KEY> and EDGE_AGENT_<TABLE>__<KEY> override the file; lists take commas or JSON."""
    env = {
        "EDGE_AGENT_MODEL": "X916",
        "EDGE_AGENT_MQTT__URL": "mqtts://broker.example:8883",
        "EDGE_AGENT_MQTT__USERNAME": "0c110512ab34",
        "EDGE_AGENT_MQTT__PASSWORD": "s3cret",
        "EDGE_AGENT_TRUST_ROOTS": "a.pem, b.pem",
        "EDGE_AGENT_CONFIG": "ignored: it names the file",
        "OTHER_VARIABLE": "ignored",
    }
    config = load_config(config_file, env)
    assert (config.model, config.mqtt.url, config.mqtt.port, config.mqtt.tls) == (
        "X916",
        env["EDGE_AGENT_MQTT__URL"],
        8883,
        True,
    )
    assert [p.name for p in config.trust_roots] == ["a.pem", "b.pem"]
    assert "s3cret" not in repr(config)
    assert load_config(config_file, {"EDGE_AGENT_TRUST_ROOTS": '["c.pem"]'}).trust_roots[0].name == "c.pem"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"EDGE_AGENT_DEVICE_ID": "nope"}, "device_id (from EDGE_AGENT_DEVICE_ID)"),
        ({"EDGE_AGENT_MQTT__URL": "tcp://x"}, "mqtt.url (from EDGE_AGENT_MQTT__URL)"),
        ({"EDGE_AGENT_COLOUR": "blue"}, "colour (from EDGE_AGENT_COLOUR)"),
        ({"EDGE_AGENT_MQTT__": "x"}, "EDGE_AGENT_MQTT__"),
        ({"EDGE_AGENT_TRUST_ROOTS": "[not json"}, "EDGE_AGENT_TRUST_ROOTS"),
    ],
)
def test_a_bad_variable_is_named(config_file: Path, env: dict[str, str], key: str) -> None:
    """An error from a variable names the key and the variable it came from."""
    with pytest.raises(ConfigError) as error:
        load_config(config_file, env)
    assert error.value.key == key


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        (
            generate_private_key(SECP256R1())
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
            "not an Ed25519",
        ),
    ],
    ids=["garbage PEM", "an EC P-256 key"],
)
def test_a_trust_root_that_is_not_an_ed25519_key_is_named(config: Config, content: bytes, problem: str) -> None:
    """A trust root file that is not an Ed25519 public key is refused, naming its index."""
    config.trust_roots[0].write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_trust_roots(config)
    assert error.value.key == "trust_roots[0]"
    assert problem in error.value.problem


@pytest.mark.parametrize(
    "content",
    ['device_id = "0c110512ab34"\nmodel = ', "\xff\xfe not text", ""],
    ids=["invalid TOML", "not UTF-8", "empty"],
)
def test_a_broken_file_stops_the_program_with_one_line(tmp_path: Path, content: str) -> None:
    """edge-agent on a broken config prints one line naming the problem, no traceback, and exits 2."""
    path = tmp_path / "broken.toml"
    path.write_bytes(content.encode("latin-1"))
    result = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("edge-agent: config error: ")
    assert "Traceback" not in result.stderr


def test_the_mr01_listener_binds_loopback_unless_told_otherwise(config_file: Path) -> None:
    """A port alone listens on 127.0.0.1; another host must be named; a bad address is named."""
    assert load_config(config_file, {"EDGE_AGENT_DRIVERS__MR01_UDP": "7700"}).drivers.mr01_udp == "127.0.0.1:7700"
    named = load_config(config_file, {"EDGE_AGENT_DRIVERS__MR01_UDP": "0.0.0.0:7700"})
    assert named.drivers.mr01_udp == "0.0.0.0:7700"
    with pytest.raises(ConfigError) as error:
        load_config(config_file, {"EDGE_AGENT_DRIVERS__MR01_UDP": ":7700"})
    assert error.value.key.startswith("drivers.mr01_udp")


def test_json_nested_too_deeply_in_a_variable_is_named(config_file: Path) -> None:
    """A variable that starts like JSON and nests thousands deep is refused naming the variable."""
    with pytest.raises(ConfigError) as error:
        load_config(config_file, {"EDGE_AGENT_TRUST_ROOTS": "[" * 5000 + "]" * 5000})
    assert error.value.key == "EDGE_AGENT_TRUST_ROOTS"
    assert "nested deeper" in error.value.problem


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("drivers.modbus.io-2", "unit = 900", "drivers.modbus.io-2.unit"),
        ("drivers.readers.exit", "address = 300", "drivers.readers.exit.address"),
        ("firmware", 'slot_devices = { a = "/dev/a", c = "/dev/c" }', "firmware.slot_devices"),
        ("mqtt", 'username = "u"\npassword = 5', "mqtt.password"),
    ],
    ids=["a module among two", "a reader among two", "a slot that is not a or b", "a password that is a number"],
)
def test_a_bad_key_inside_a_table_of_named_entries_is_named(config_file: Path, table: str, line: str, key: str) -> None:
    """An entry of a table of named entries is named by its own name, not its position (each table here has
    a good entry beside the bad one)."""
    named = {
        "drivers.modbus.io-1": "unit = 1", "drivers.readers.entry": 'bus = "b"\naddress = 1\ndoor = "d"',
    } if table.startswith("drivers") else {}  # fmt: skip
    text = config_file.read_text() + "".join(f"\n[{t}]\n{body}\n" for t, body in named.items())
    config_file.write_text(text if f"[{table}]" in text else text + f"\n[{table}]\n")
    _replace(config_file, line, table)
    with pytest.raises(ConfigError) as error:
        load_config(config_file, {})
    assert error.value.key == key, str(error.value)


def test_variables_are_taken_as_toml_would_give_them(config_file: Path) -> None:
    """A variable is text: a number, a boolean or a path in it is read as the key's type."""
    config = load_config(
        config_file,
        {"EDGE_AGENT_MQTT__KEEPALIVE": "60", "EDGE_AGENT_FIRMWARE__READ_BACK": "false",
         "EDGE_AGENT_FIRMWARE__CA_FILE": "ca.pem", "EDGE_AGENT_MQTT__TIMEOUT": "2.5"},
    )  # fmt: skip
    assert (config.mqtt.keepalive, config.firmware.read_back, config.mqtt.timeout) == (60, False, 2.5)
    assert config.firmware.ca_file == config_file.parent / "ca.pem"
    with pytest.raises(ConfigError) as error:
        load_config(config_file, {"EDGE_AGENT_MQTT__KEEPALIVE": "sixty"})
    assert error.value.key == "mqtt.keepalive (from EDGE_AGENT_MQTT__KEEPALIVE)"
