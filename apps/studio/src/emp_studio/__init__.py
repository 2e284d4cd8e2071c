"""EMP studio: the server-rendered browser app over emp_core (FastAPI, Jinja2, htmx)."""

__version__ = "0.1.0"
