"""The REST API and web monitor of jobqueue (Flask, served by gunicorn)."""
