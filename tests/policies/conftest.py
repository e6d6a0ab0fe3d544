"""Fixtures of the policy tests: the scripted OpenAI-compatible server (:mod:`scripted_chat`)."""

from __future__ import annotations

import pytest

from scripted_chat import ScriptedServer, scripted_chat_server


@pytest.fixture(scope="module")
def chat_server():
    """Start the server once per module; the script and request log are cleared per test."""
    with scripted_chat_server() as server:
        yield server


@pytest.fixture
def server(chat_server: ScriptedServer) -> ScriptedServer:
    chat_server.script.clear()
    chat_server.requests.clear()
    return chat_server
