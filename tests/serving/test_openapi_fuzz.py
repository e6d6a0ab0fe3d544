"""Property-based runs against the live server: no generated request may produce a 500, and every
answer must use a status code the OpenAPI schema documents."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from serving_helpers import AUTH, TOKEN

from medseg_agent.serving.app import create_app
from medseg_agent.serving.client import ToolServerClient
from medseg_agent.tools.registry import build_tool

pytestmark = pytest.mark.slow


# The schema the server publishes (same app factory, same routes); requests go to the live server.
# (schemathesis.pytest.from_fixture does not work with pytest 9: it sets a removed node attribute.)
schema = schemathesis.openapi.from_dict(create_app(build_tool("classic")).openapi())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case, classic_server):
    case.call_and_validate(
        base_url=classic_server.url,
        headers=AUTH,
        checks=[not_a_server_error, status_code_conformance],
        timeout=30,
    )


numbers = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["12", "x", None, True, [1]]),
)
coords = st.one_of(st.lists(numbers, min_size=0, max_size=6), numbers, st.text(max_size=5))


@pytest.fixture(scope="module")
def live_session(classic_server, make_sample):
    client = ToolServerClient(classic_server.url, token=TOKEN)
    session = client.create_session(make_sample(seed=11).image, coordinate_space="norm1000")
    yield session
    client.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    action=st.sampled_from(["box", "point"]),
    body=st.one_of(
        st.fixed_dictionaries({"bbox_2d": coords}),
        st.fixed_dictionaries(
            {"point_2d": coords, "point_type": st.sampled_from(["positive", "negative", "maybe", 1])}
        ),
        st.dictionaries(st.text(max_size=8), numbers, max_size=3),
    ),
)
def test_actions_on_a_real_session_answer_200_or_a_named_422(live_session, classic_server, action, body):
    """Deeper than the schema fuzzing (which mostly meets unknown ids): arbitrary tool-call arguments
    sent to a live session are applied or refused with a message, never a crash."""
    response = httpx.post(
        f"{classic_server.url}/v1/sessions/{live_session.id}/{action}", json=body, headers=AUTH, timeout=30
    )
    assert response.status_code in (200, 409, 422), response.text
    if response.status_code != 200:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    box=st.one_of(st.none(), st.lists(st.floats(-50, 300, width=32), min_size=4, max_size=4)),
    points=st.lists(st.lists(st.floats(-50, 300, width=32), min_size=2, max_size=2), max_size=3),
    labels=st.lists(st.sampled_from([0, 1]), max_size=3),
    mask_shape=st.one_of(st.none(), st.lists(st.integers(1, 70), min_size=1, max_size=3)),
)
def test_predict_with_arbitrary_prompts_never_crashes(classic_server, live_session, box, points, labels,
                                                      mask_shape):
    prompt: dict = {"box": box, "points": points, "labels": labels}
    if mask_shape is not None:
        values = np.zeros(mask_shape, dtype="<f4")
        prompt["mask_input"] = {"shape": mask_shape, "data": base64.b64encode(values.tobytes()).decode()}
    response = httpx.post(
        f"{classic_server.url}/v1/predict",
        json={"image_id": live_session.image_id, "prompts": [prompt]},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["predictions"][0]["mask"]["size"] == [96, 128]
