"""The man pages (make man, docs/man/): sluice(1) documents every option
`sluice --help` lists, and both pages render without a warning at 80
columns. Skipped where pandoc or man is missing."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sluice_fixture import IS_PGBOUNCER, REPO, SLUICE_BIN

pytestmark = [
    pytest.mark.skipif(IS_PGBOUNCER, reason="sluice's own pages"),
    pytest.mark.skipif(not shutil.which("pandoc") or not shutil.which("man"),
                       reason="needs pandoc and man (scripts/deps.sh)"),
]


@pytest.fixture(scope="module")
def pages():
    subprocess.run(["make", "--no-print-directory", "-s", "man"], cwd=REPO, check=True)
    return {name: REPO / "build/man" / name for name in ("sluice.1", "sluice.ini.5")}


def rendered(path):
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="80"), check=True)
    return r.stdout, r.stderr


def test_every_option_of_help(pages):
    help_text = subprocess.run([SLUICE_BIN, "--help"], capture_output=True, text=True).stdout
    options = re.findall(r"^\s+(-\w), (--[\w-]+)", help_text, re.M)
    assert len(options) >= 7, help_text
    page, _ = rendered(pages["sluice.1"])
    for short, long in options:
        assert re.search(rf"^\s+{short}\b.*{long}\b", page, re.M), f"{short}/{long} not in sluice(1)"


def test_render_without_warnings(pages):
    for name, path in pages.items():
        text, warnings = rendered(path)
        assert warnings == "", f"{name}: {warnings}"
        assert "SEE ALSO" in text


def test_every_setting_in_sluice_ini_5(pages):
    """docs/configuration.md's settings tables reach the page as entries."""
    doc = (REPO / "docs/configuration.md").read_text()
    settings = re.findall(r"^\| `(\w+)` \|", doc, re.M)
    assert len(settings) > 50
    page, _ = rendered(pages["sluice.ini.5"])
    missing = [s for s in settings if not re.search(rf"^\s+{s}\b", page, re.M)]
    assert not missing, missing
