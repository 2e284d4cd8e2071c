"""The studio's pages, one module per view: each has its routes, and its templates are named after
it (``jobs.html``, ``_job_row.html``)."""
