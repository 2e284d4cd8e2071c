"""Webhooks: where a user's job events are sent (``addresses``: which URLs are allowed),
how one delivery is sent and signed (``sender``), the loop that sends what the outbox holds
(``dispatcher``) and the feed of progress events into it (``progress``). The rows live in
``emp_sql.webhooks`` and ``emp_sql.webhook_outbox``."""
