"""EMP machine supervisor: runs one worker process per GPU slot and reports the machine."""

__version__ = "0.1.0"
