"""The ceiling for bench/pages.py: a bare Flask app answering "hello" (no database, no
session, no template), served by the same gunicorn settings as the portal."""
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, world!"
