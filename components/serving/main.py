"""The ASGI entry point: ``uvicorn components.serving.main:app_factory --factory`` (what `ecomrec serve`
and the container run). Settings come from ECOMREC_* environment variables."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from components.serving.app import create_app
from components.serving.settings import ServingSettings


def app_factory() -> FastAPI:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(ServingSettings())
