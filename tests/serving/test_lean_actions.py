"""The lean action routes (medseg_agent.serving.api_actions) answer exactly as the FastAPI routes
they stand in for: same statuses, same JSON, for good and malformed requests."""

from __future__ import annotations

import httpx
import pytest
from serving_helpers import AUTH, TOKEN, blob_sample, start_server

from medseg_agent.serving.client import ToolServerClient
from medseg_agent.tools.registry import build_tool

REQUESTS = [  # (route suffix, query, json body or raw bytes)
    ("box", "", {"bbox_2d": [200, 200, 800, 800]}),
    ("point", "", {"point_2d": [500, 500], "point_type": "negative"}),
    ("point", "?include_mask=false", {"point_2d": [300, 400], "point_type": "positive"}),
    ("box", "?include_mask=0", {"bbox_2d": [100, 100, 400, 400]}),
    ("box", "?include_mask=maybe", {"bbox_2d": [100, 100, 400, 400]}),
    ("box", "", {"bbox_2d": [1, 2, 3]}),
    ("box", "", {"bbox_2d": [1, 2, 3, 1000]}),
    ("box", "", {"bbox_2d": [500, 2, 300, 9]}),
    ("point", "", {"point_2d": [1, 2], "point_type": "maybe"}),
    ("point", "", {"point_2d": [1, 2], "point_type": "positive", "extra": 1}),  # extra keys are ignored
    ("box", "", b"{nope"),
    ("box", "", b""),
]


def _answers(lean: bool) -> list[tuple[int, object]]:
    server = start_server(build_tool("classic"), token=TOKEN, lean_actions=lean)
    try:
        client = ToolServerClient(server.url, token=TOKEN, retries=1, backoff_s=0.01)
        session = client.create_session(blob_sample(seed=3).image, coordinate_space="norm1000")
        client.close()
        answers = []
        with httpx.Client(base_url=server.url, headers=AUTH) as http:
            for suffix, query, body in [*REQUESTS, ("box", "", {"bbox_2d": [1, 2, 3, 4]})]:
                sid = session.id if len(answers) < len(REQUESTS) else "nonexistent"
                kwargs = {"content": body, "headers": {"content-type": "application/json"}} \
                    if isinstance(body, bytes) else {"json": body}
                response = http.post(f"/v1/sessions/{sid}/{suffix}{query}", **kwargs)
                answer = response.json()
                if isinstance(answer, dict):
                    answer.pop("idle_expires_in_s", None)
                    answer.pop("session_id", None)
                answers.append((response.status_code, answer))
        return answers
    finally:
        server.stop()


def test_lean_action_routes_answer_as_the_fastapi_routes():
    lean, routed = _answers(True), _answers(False)
    assert [status for status, _ in lean] == [200, 200, 200, 200, 422, 422, 422, 422, 422, 200, 422, 422, 404]
    for i, (a, b) in enumerate(zip(lean, routed, strict=True)):
        assert a == b, (REQUESTS[i] if i < len(REQUESTS) else "unknown session", a, b)
    assert lean[2][1]["mask"] is None and lean[0][1]["mask"]["counts"]


@pytest.mark.parametrize("lean", [True, False])
def test_metrics_label_the_action_routes_by_template(lean):
    server = start_server(build_tool("classic"), lean_actions=lean)
    try:
        client = ToolServerClient(server.url, retries=1, backoff_s=0.01)
        session = client.create_session(blob_sample(seed=4).image)
        session.add_box([10, 10, 60, 50])
        client.close()
        text = httpx.get(f"{server.url}/metrics").text
        assert '/v1/sessions/{session_id}/box' in text
        assert session.id not in text
    finally:
        server.stop()
