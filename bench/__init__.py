"""The queue's benchmark (``make bench``): throughput and latency of the core against a private
Redis, each figure beside its target and beside the raw FCALL ceiling of the same Redis.

Run it with ``uv run python -m bench``; ``--help`` lists the options. It prints a table and writes
``bench/results/latest.json``. A benchmark, not a test: it never fails on a missed target.
"""
