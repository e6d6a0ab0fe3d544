"""The segmentation tool server built for RL rollouts and its HTTP clients.

``app.create_app`` (FastAPI; imported lazily: clients must not need the server's dependencies),
``server.BackgroundServer`` / ``server.run_server`` (uvicorn), ``client.HttpSegmentationTool``
(``--tool http://host:port``) and ``client.ToolServerClient`` (the session API);
``app_api.install_app`` adds the annotation app (``/v1/app`` and the page under ``/app``).
"""
