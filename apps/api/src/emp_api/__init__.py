"""EMP HTTP API: FastAPI over emp_core, jobs over REST and WebSocket."""

__version__ = "0.1.0"
