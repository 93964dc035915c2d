"""HTTP service and web page for a model bundle: ``polyemo serve`` (FastAPI + uvicorn)."""

from polyemo.serve.app import ServeConfig, create_app, serve, web_dir

__all__ = ["ServeConfig", "create_app", "serve", "web_dir"]
