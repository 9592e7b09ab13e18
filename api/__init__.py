"""The REST API and web monitor of jobqueue (Flask, served by gunicorn)."""

from api.app import create_app

__all__ = ["create_app"]
