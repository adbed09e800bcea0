"""The REST bridge: HTTP endpoints that record launch requests, and the sensor that launches them.

`center_pipeline.bridge.app.create_app` builds the FastAPI app; `center-pipeline bridge`
serves it with uvicorn. This module imports nothing, so that `center_pipeline.status` can use
the request store without loading FastAPI.
"""
