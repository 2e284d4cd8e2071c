"""gRPC glue shared by the server (``emp_api.grpc``) and clients (the worker's grpc transport):
bearer metadata and conversions between ``emp_core`` models and ``emp.v1`` messages.

The generated code is in the top-level package ``emp.v1`` (``make proto`` writes it from
``proto/emp/v1``; it is committed, and ``make proto-check`` fails when it is stale).
"""
