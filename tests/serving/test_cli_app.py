"""``medseg-agent app`` as a user runs it: a real process that prints the page's URL with the token."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
from serving_helpers import free_port, wait_until_healthy
from typer.testing import CliRunner

from medseg_agent.cli.app import app


def test_app_help_explains_the_options():
    result = CliRunner().invoke(app, ["app", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ("--tool", "--out", "--data", "--no-demo", "--agent-url", "--agent-checkpoint", "--annotator",
                   "--token", "--max-turns", "trajectories export"):
        assert option in result.output


@pytest.mark.slow
def test_app_command_serves_the_page_and_stops_on_sigterm(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "medseg_agent.cli.app", "app", "--port", str(port), "--token", "team-secret",
         "--out", str(tmp_path / "out"), "--data", str(tmp_path / "no-such-dataset"), "--annotator", "lead"],
        env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        assert "medseg-agent annotator" in httpx.get(f"{url}/app/").text
        assert httpx.get(f"{url}/v1/app/info").status_code == 401
        info = httpx.get(f"{url}/v1/app/info", headers={"Authorization": "Bearer team-secret"}).json()
        assert info["annotator"] == "lead" and info["library_size"] == 0
        assert "could not open" in info["library_warning"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), output
    flat = " ".join(output.split())
    assert re.search(rf"open http://127\.0\.0\.1:{port}/app/#token=team-secret", flat), output
    assert "could not open" in flat and "Traceback" not in output
