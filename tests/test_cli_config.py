"""`returnsd check-config` reports every problem of a config at once, field errors included."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from returnsd.cli import main
from tests.conftest import campaign_dict


def check(tmp_path: Path, doc: dict) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["--config", str(path), "check-config"])
    return result.exit_code, result.output


def test_field_error_port_clash_and_missing_key_are_reported_together(tmp_path: Path) -> None:
    campaign = campaign_dict(
        smtp={"address": "not-an-address"},
        pull={
            "url": "sftp://files.example/out",
            "user": "acme",
            "private_key": {"file": str(tmp_path / "missing.key")},
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
        },
    )
    doc = {
        "database_url": f"sqlite:///{tmp_path / 'r.db'}",
        "channels": {"ftp": {"port": 2121}, "http": {"port": 2121}},
        "campaigns": [campaign],
    }
    code, out = check(tmp_path, doc)
    assert code == 2
    assert "campaigns.0.smtp.address" in out and "must be an e-mail address" in out
    assert "channels ftp and http both listen on 127.0.0.1:2121" in out
    assert "pull.private_key" in out and "missing.key" in out
    assert "Traceback" not in out


def test_a_valid_config_passes(tmp_path: Path) -> None:
    doc = {"database_url": f"sqlite:///{tmp_path / 'r.db'}", "campaigns": [campaign_dict()]}
    code, out = check(tmp_path, doc)
    assert code == 0, out
