"""The gRPC adapter: ``emp.v1`` services over the same process services as the REST routes
(``server.py`` starts it beside the HTTP app; ``jobs.py`` is JobService; ``errors.py`` maps
domain errors to status codes)."""
