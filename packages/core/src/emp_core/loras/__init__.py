"""LoRAs (ADR-010): the worker's content-addressed cache and, from the upload side, file checks."""
