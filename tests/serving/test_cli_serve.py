"""``medseg-agent serve`` as a user runs it: a real process, a token, a clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import psutil
import pytest
from serving_helpers import free_port, wait_until_healthy
from typer.testing import CliRunner

from medseg_agent.cli.app import app
from medseg_agent.serving.client import ServerError, ToolServerClient
from medseg_agent.tools.registry import build_tool
from medseg_agent.vocabulary.prompts import Prompt


def test_serve_help_explains_the_options():
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ("--tool", "--token", "--cache-mb", "--session-ttl", "--max-body-mb", "--random-weights",
                   "--tool-option", "--model-process"):
        assert option in result.output


def test_serve_reports_a_tool_option_the_tool_does_not_take():
    wide = {"COLUMNS": "200"}
    result = CliRunner().invoke(app, ["serve", "--tool", "classic", "--tool-option", "colour=1"], env=wide)
    assert result.exit_code == 2 and "unexpected keyword argument 'colour'" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["serve", "--tool-option", "no-equals-sign"], env=wide)
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_serve_and_app_refuse_a_log_level_uvicorn_does_not_have():
    for command in ("serve", "app"):
        result = CliRunner().invoke(app, [command, "--log-level", "loud"], env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output  # uvicorn's KeyError came only once the server started
        assert "'loud' is not a log level; choose one of critical, error, warning, info, debug, trace" in result.output


def test_serve_refuses_a_url_as_the_tool():
    result = CliRunner().invoke(app, ["serve", "--tool", "http://127.0.0.1:9"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "not another server's URL" in " ".join(result.output.split())


@pytest.mark.slow
@pytest.mark.parametrize("model_process", [False, True], ids=["one-process", "model-process"])
def test_serve_command_runs_a_server_and_stops_on_sigterm(monkeypatch, model_process):
    port = free_port()
    monkeypatch.setenv("MEDSEG_AGENT_TOKEN", "cli-secret")  # read by both the server and the client
    env = dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "medseg_agent.cli.app", "serve", "--tool", "classic", "--port", str(port),
         "--log-level", "info", *(["--model-process"] if model_process else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    children: list[psutil.Process] = []
    try:
        wait_until_healthy(url, process)
        # uvicorn picks uvloop (a dependency) over asyncio's loop: a quarter less CPU per action
        assert httpx.get(f"{url}/health").json()["event_loop"] == "uvloop"
        children = psutil.Process(process.pid).children(recursive=True)
        model = [c for c in children if "multiprocessing.spawn" in " ".join(c.cmdline())]
        assert len(model) == (1 if model_process else 0), [c.cmdline() for c in children]
        with pytest.raises(ServerError, match="401"):
            ToolServerClient(url, token="wrong").create_session(np.zeros((8, 8), np.uint8))
        tool = build_tool(url)  # the token comes from $MEDSEG_AGENT_TOKEN, like the server's
        image = np.zeros((320, 320, 3), np.uint8)  # 300 kB: crosses to a model process through shared memory
        image[100:220, 100:220] = 200
        assert tool.set_image(image).predict(Prompt(box=np.array([90, 90, 230, 230]))).mask[160, 160]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit status -SIGTERM)
    assert process.returncode in (0, -signal.SIGTERM), output
    assert f"serving classic on {url}" in output and "Application shutdown complete" in output
    assert "Traceback" not in output
    # the model process and its shared memory are closed before uvicorn re-raises the signal, which
    # ends the server without running its exit handlers
    assert "leaked shared_memory" not in output
    gone, alive = psutil.wait_procs(children, timeout=15)  # the model process ends with the server
    assert not alive, [c.cmdline() for c in alive]


def test_serve_replicas_hands_the_tool_options_to_the_cluster(monkeypatch):
    """--replicas builds no tool here: each replica builds it from the spec, with the same options."""
    from medseg_agent.serving import cluster

    seen = {}
    monkeypatch.setattr(cluster, "run_cluster", lambda spec, **where: seen.update(spec=spec, **where))
    args = ["serve", "--tool", "sam2", "--model-type", "configs/sam2.1/sam2.1_hiera_t.yaml", "--device", "cuda",
            "--tool-option", "image_size=512", "--replicas", "2", "--port", "9100"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    spec = seen["spec"]
    assert spec.tool.name == "sam2" and spec.tool.device == "cuda"
    assert spec.replicas == 2 and spec.gpus_per_replica == 1.0 and not spec.model_process
    assert spec.tool.options == {"image_size": 512, "config": "configs/sam2.1/sam2.1_hiera_t.yaml"}
    assert seen["port"] == 9100 and seen["ray_address"] is None
