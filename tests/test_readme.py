"""The README's examples, run against the demo configuration, so the README cannot drift.

Every ```csv block of README.md is ingested into the demo ledger (in README order, the way a reader
tries them) and must apply without a row error; the XML example file too. Every ```sh block marked
`<!-- readme-test: demo-daemon -->` runs with bash against `returnsd run` on a copy of config.yaml
(free ports instead of the documented ones), and every file it sends must be processed COMPLETE,
none a DUPLICATE. Blocks marked `<!-- readme-test: cli -->` run after the ingests and must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import need
from tests.sshd import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
DOCUMENTED_PORTS = {"ftp": 2121, "smtp": 2525, "http": 8080, "console": 8000}


def blocks(language: str, marker: str | None = None) -> list[str]:
    """The fenced blocks of `language` in README.md, only those after `marker` when given."""
    text = README.read_text(encoding="utf-8")
    pattern = r"(<!-- readme-test: ([\w-]+) -->\n)?```" + language + r"\n(.*?)```"
    found = []
    for m in re.finditer(pattern, text, re.S):
        if marker is None or m.group(2) == marker:
            found.append(m.group(3))
    return found


class Demo:
    """A copy of the demo configuration in a folder of its own, demo actions imported."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {name: free_port() for name in DOCUMENTED_PORTS}
        doc = yaml.safe_load((ROOT / "config.yaml").read_text())
        doc["database_url"] = f"sqlite:///{folder / 'var' / 'returnsd.db'}"
        for name, port in self.ports.items():
            (doc["console"] if name == "console" else doc["channels"][name])["port"] = port
        passive = free_port()
        doc["channels"]["ftp"]["passive_ports"] = [passive, passive]
        doc["channels"]["ftp"]["failed_login_delay"] = 0.1
        doc["channels"]["dropdir"]["stable_seconds"] = 0.2
        doc["channels"]["dropdir"]["rescan_seconds"] = 1
        self.config = folder / "config.yaml"
        self.config.write_text(yaml.safe_dump(doc))
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RETURNSD_CONFIG": str(self.config),
        }
        self.env.pop("RETURNSD_DATABASE_URL", None)
        demo = folder / "var" / "demo"
        self.run_ok([sys.executable, str(ROOT / "fixtures/demo/make_demo.py"), "--out", str(demo)])
        self.returnsd(
            "actions", "import", str(demo / "actions.csv"), "--items", str(demo / "items.csv")
        )

    def run_ok(self, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the demo folder; fail the test with its output unless it exits 0."""
        done = subprocess.run(
            cmd, cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=120, **kw
        )
        assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        return done

    def returnsd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the returnsd command line on the demo configuration."""
        return self.run_ok([str(BIN / "returnsd"), "--config", str(self.config), *args])

    def localise(self, script: str) -> str:
        """A README block with the demo's free ports and this test's returnsd."""
        for name, port in DOCUMENTED_PORTS.items():
            script = re.sub(rf"\b{port}\b", str(self.ports[name]), script)
        return script.replace(".venv/bin/returnsd", str(BIN / "returnsd"))

    def files(self) -> list[dict[str, Any]]:
        """Every received file's summary."""
        out = self.returnsd("files", "list", "--json", "--all").stdout
        docs: list[dict[str, Any]] = json.loads(out)
        return docs


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    """The demo campaign with its 3,000 actions in a fresh folder."""
    return Demo(tmp_path)


@pytest.fixture
def running(demo: Demo) -> Iterator[Demo]:
    """`returnsd run` on the demo copy, until the test ends."""
    log = (demo.folder / "daemon.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "returnsd"), "--config", str(demo.config), "run"],
        cwd=demo.folder,
        env=demo.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "returnsd running" not in (demo.folder / "daemon.log").read_text():
            assert proc.poll() is None, (demo.folder / "daemon.log").read_text()
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.1)
        yield demo
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_the_readme_has_examples_to_run() -> None:
    assert len(blocks("csv")) >= 5
    assert blocks("sh", "demo-daemon")


def test_every_csv_and_xml_example_applies_on_the_demo(demo: Demo) -> None:
    examples = [*blocks("csv"), None]
    for n, text in enumerate(examples):
        path = demo.folder / f"example-{n}.csv"
        if text is None:
            path = ROOT / "fixtures" / "demo" / "returns.xml"
        else:
            path.write_text(text)
        doc = json.loads(demo.returnsd("ingest", str(path), "--campaign", "demo", "--json").stdout)
        assert doc["status"] == "COMPLETE", (text, doc)
        assert doc["counts"].get("errors", 0) == 0, (text, doc)
        assert doc["counts"].get("applied", 0) >= 1, (text, doc)
    for script in blocks("sh", "cli"):
        demo.run_ok(["bash", "-euo", "pipefail", "-c", demo.localise(script)])


def test_the_quick_start_reaches_every_channel(running: Demo) -> None:
    if shutil.which("curl") is None:
        need("curl", "the quick start sends files with curl")
    for script in blocks("sh", "demo-daemon"):
        running.run_ok(["bash", "-euo", "pipefail", "-c", running.localise(script)])
    deadline = time.monotonic() + 60
    while True:
        docs = running.files()
        if len(docs) >= 5 and all(d["status"] not in ("QUEUED", "PROCESSING") for d in docs):
            break
        assert time.monotonic() < deadline, f"files not processed: {docs}"
        time.sleep(0.2)
    assert sorted(d["channel"] for d in docs) == ["cli", "dropdir", "ftp", "http", "smtp"]
    for d in docs:
        assert d["status"] == "COMPLETE", d
        assert d["counts"].get("errors", 0) == 0, d
