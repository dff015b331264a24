"""The README's two quickstart commands are the ones CI and users run; they cannot drift apart."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command_after(marker: str, text: str) -> str:
    m = re.search(re.escape(marker) + r"\s*```bash\n(.+?)\n```", text, re.S)
    assert m, f"README has no fenced command after {marker}"
    lines = [ln for ln in m.group(1).splitlines() if ln.strip()]
    assert len(lines) == 1, f"the quickstart block after {marker} must hold exactly one command"
    return lines[0]


def test_quickstart_has_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"```bash\n", quick)) == 2
    assert _command_after("<!-- demo-command -->", text).endswith("geomatch demo")
    assert "pytest" in _command_after("<!-- test-command -->", text)


def test_ci_runs_the_readme_test_command():
    text = (ROOT / "README.md").read_text()
    expected = _command_after("<!-- test-command -->", text)
    # Run the exact extraction .ci/run uses.
    out = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == expected
    ci = (ROOT / ".ci" / "run").read_text()
    assert "/<!-- test-command -->/{getline; getline; print; exit}" in ci
    assert 'bash -euo pipefail -c "$test_cmd"' in ci
    assert "torch==2.13.0" in ci.split("test_cmd=")[0], "CI must install torch before the package"
