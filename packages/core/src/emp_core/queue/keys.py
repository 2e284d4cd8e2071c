"""Every Redis key and channel the queue uses, each template written once.

All keys of one queue share the hash tag ``{queue}``, so every key a Redis Function touches lives
in one Cluster slot. Lua derives a few keys from a job's stored fields (claim, cancel, reap find
the job inside the function); it builds them from ``prefix`` with the same suffixes as below, and
``tests/test_keys.py`` checks that the two spellings agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """The key schema of one queue: ``Keys(prefix="emp", queue="default")``."""

    prefix: str = "emp"
    queue: str = "default"

    @property
    def base(self) -> str:
        """Prefix of every key of this queue; the braces are the Cluster hash tag."""
        return f"{self.prefix}:{{{self.queue}}}"

    # --- job records -------------------------------------------------------------------------
    def job(self, job_id: str) -> str:
        """Hash: one job's fields while live and for the retention period."""
        return f"{self.base}:job:{job_id}"

    def events(self, job_id: str) -> str:
        """Stream: one job's events, capped, replayed to late subscribers."""
        return f"{self.base}:events:{job_id}"

    def seq(self) -> str:
        """Counter: submit order, the FIFO part of the pending score."""
        return f"{self.base}:seq"

    def fence(self) -> str:
        """Counter: fencing tokens, one per claim, so a stale worker's writes are refused."""
        return f"{self.base}:fence"

    # --- pending index: jobs grouped by what they need ------------------------------------------
    def classes(self, service: str) -> str:
        """Hash: requirement classes of a service with pending jobs, class id -> requirements."""
        return f"{self.base}:classes:{service}"

    def pending(self, class_id: str) -> str:
        """Sorted set: pending jobs of one requirement class by score (priority, then age)."""
        return f"{self.base}:pending:{class_id}"

    def pending_customer(self, class_id: str, customer_id: str) -> str:
        """Sorted set: the same, for one customer (workers with allow lists read these)."""
        return f"{self.base}:pending:{class_id}:cust:{customer_id}"

    def pending_workflow(self, class_id: str, workflow_id: str) -> str:
        """Sorted set: the same, for one workflow (workers pinned to a workflow read these)."""
        return f"{self.base}:pending:{class_id}:wf:{workflow_id}"

    def pending_customers(self, class_id: str, priority: int) -> str:
        """Sorted set: the customers with pending jobs of one class at one priority, by (a lower
        bound of) their fair-share start tag: what a claim compares customers by."""
        return f"{self.base}:pending:{class_id}:customers:{priority}"

    # --- fair shares between customers (see lua/emp.lua, "fair shares") -----------------------
    def fair_tags(self, service: str) -> str:
        """Sorted set: customer -> finish tag (share used / weight) of a service, plus the member
        ``~clock``, the service's virtual clock; customers behind the clock are dropped."""
        return f"{self.base}:fair:{service}"

    def fair_weights(self) -> str:
        """Hash: customer -> weight of its share (default 1), set by operators."""
        return f"{self.base}:fair_weights"

    # --- the claim's index: capability profiles (see lua/emp.lua, "capability profiles") -------
    def profiles(self, service: str) -> str:
        """Hash: profile id -> canonical profile (what matching reads of a worker) of a service."""
        return f"{self.base}:profiles:{service}"

    def profiles_seen(self, service: str) -> str:
        """Sorted set: profile id -> last claim (ms); a profile unused for an hour retires."""
        return f"{self.base}:profiles_seen:{service}"

    def ready(self, service: str, profile_id: str) -> str:
        """Sorted set: classes this profile can run that have pending jobs, by (a lower bound
        of) their head's score: what a claim reads instead of every class."""
        return f"{self.base}:ready:{service}:{profile_id}"

    def idle(self, service: str, profile_id: str) -> str:
        """Sorted set: idle worker slots ``worker#slot`` of this profile, by when they went idle;
        a job becoming pending wakes one of them."""
        return f"{self.base}:idle:{service}:{profile_id}"

    def pending_count(self) -> str:
        """Hash: service -> number of pending jobs, for queue depth without scanning."""
        return f"{self.base}:pending_count"

    def workflow(self, workflow_id: str) -> str:
        """Hash: a workflow's priority, first submit order and customer, inherited by its steps."""
        return f"{self.base}:workflow:{workflow_id}"

    # --- time-ordered sets ----------------------------------------------------------------------
    def delayed(self) -> str:
        """Sorted set: jobs waiting out a retry backoff, by due time (ms)."""
        return f"{self.base}:delayed"

    def leases(self) -> str:
        """Sorted set: claimed jobs by lease deadline (ms); the reaper reads its head."""
        return f"{self.base}:leases"

    def dead(self) -> str:
        """Sorted set: the dead-letter set, finally failed jobs by failure time (ms)."""
        return f"{self.base}:dead"

    def customer_jobs(self, customer_id: str) -> str:
        """Sorted set: a customer's jobs by submit order, for listing without SCAN. The empty
        customer (``customer::jobs``) holds the jobs submitted without an owner (CLI, demo)."""
        return f"{self.base}:customer:{customer_id}:jobs"

    def quarantine(self) -> str:
        """Hash: ``class:{id}`` / ``job:{id}`` -> JSON reason and time, for stored records a claim
        could not use (written by hand or by an older deploy); set aside, never claimed."""
        return f"{self.base}:quarantine"

    # --- workers --------------------------------------------------------------------------------
    def worker(self, worker_id: str) -> str:
        """Hash with TTL: a live worker's capabilities, state and current job."""
        return f"{self.base}:worker:{worker_id}"

    def worker_loras(self, worker_id: str) -> str:
        """Set with TTL: sha256 of the LoRA files a worker's cache holds (its most recently used,
        bounded), which the claim reads for its affinity score (ADR-010)."""
        return f"{self.base}:worker:{worker_id}:loras"

    def lora_holders(self, sha256: str) -> str:
        """Set: ids of the workers whose cache holds this LoRA file; the claim's affinity window
        reads whether one exists (the Lua derives it from the key base)."""
        return f"{self.base}:lora:{sha256}:holders"

    def workers(self) -> str:
        """Sorted set: worker id -> last seen (ms), to list workers without SCAN."""
        return f"{self.base}:workers"

    def services_served(self) -> str:
        """Hash: service -> until when (ms) a live worker serves it, written at each registry
        refresh and never deleted: a submit for a service with no entry, or an entry in the
        past, is accepted with a warning."""
        return f"{self.base}:services"

    # --- machines -------------------------------------------------------------------------------
    def machine(self, machine_id: str) -> str:
        """Hash with TTL: a machine supervisor's status, its workers and their restart counts."""
        return f"{self.base}:machine:{machine_id}"

    def machine_commands(self, machine_id: str) -> str:
        """Channel: commands to one machine supervisor (drain, restart a worker), JSON."""
        return f"{self.base}:machine-commands:{machine_id}"

    def machine_reply(self, command_id: str) -> str:
        """List with TTL: a machine supervisor's answer to one command (issue 17), popped by the
        process that sent the command."""
        return f"{self.base}:machine-reply:{command_id}"

    def machines(self) -> str:
        """Sorted set: machine id -> last report (ms), to list machines and spot lost ones."""
        return f"{self.base}:machines"

    # --- the HTTP API ---------------------------------------------------------------------------
    def idempotency(self, owner_id: str, key_digest: str) -> str:
        """String with TTL: an ``Idempotency-Key`` of one user -> the job it created (24 h)."""
        return f"{self.base}:idem:{owner_id}:{key_digest}"

    def outputs(self) -> str:
        """Sorted set: job output blob paths by when they are deleted (ms): their job's
        retention after it finished (``emp_core.blobs.retention``)."""
        return f"{self.base}:outputs"

    def finished(self) -> str:
        """Sorted set: finished jobs not yet copied into the SQL archive, by finish time (ms);
        the Lua terminal transitions add them, the archive projector removes them."""
        return f"{self.base}:finished"

    def runtimes(self, service: str) -> str:
        """List: the run times (ms) of a service's latest completed jobs, newest first, capped;
        what a pending job's ETA is estimated from (written by the archive projector)."""
        return f"{self.base}:runtimes:{service}"

    def minute_stats(self, minute: int) -> str:
        """Hash with TTL (25 h): one minute's counters (minute = Unix ms // 60000), fields
        ``<metric>:<service>``: submitted, completed, failed, retried, cancelled and the first
        claims' wait (counted by the Lua's ``tally``) and the pending depth sampled by the reaper
        and the dashboard; what the dashboard's charts read (``emp_core.queue.stats``)."""
        return f"{self.base}:stats:{minute}"

    def reaper_lock(self) -> str:
        """String with TTL: held by the process that swept expired leases in this interval, so
        N processes running the reaper cost one sweep per interval."""
        return f"{self.base}:reaper"

    def archive_leader(self) -> str:
        """String with TTL: the id of the one process whose archive projector is running."""
        return f"{self.base}:archive_leader"

    # --- the web tier's security: sockets' tickets, browser sessions, rate limits -----------------
    def ws_ticket(self, ticket_digest: str) -> str:
        """String with TTL: a single-use WebSocket ticket (by its sha256) -> the token's hash."""
        return f"{self.base}:wsticket:{ticket_digest}"

    def session(self, session_id: str) -> str:
        """Hash with TTL (the idle timeout): one signed-in browser session, by its id (the
        sha256 of the secret in the cookie)."""
        return f"{self.base}:session:{session_id}"

    def user_sessions(self, user_id: str) -> str:
        """Sorted set: a user's session ids by start time (ms), to list and end them all."""
        return f"{self.base}:sessions:{user_id}"

    def rate_limits(self) -> str:
        """Prefix of the rate limiters' counters (the ``limits`` library writes below it)."""
        return f"{self.base}:limits"

    # --- error patterns (ADR-009) ----------------------------------------------------------------
    def patterns_snapshot(self) -> str:
        """String: the enabled error patterns as versioned JSON, what workers classify with."""
        return f"{self.base}:patterns:snapshot"

    def pattern_matches(self, day: str) -> str:
        """Hash: matches of one UTC day (YYYY-MM-DD) per pattern and connector, not yet in SQL."""
        return f"{self.base}:patterns:matches:{day}"

    def pattern_matches_folding(self, token: str) -> str:
        """Hash: a day's matches renamed away by one folder, so no other folder counts them."""
        return f"{self.base}:patterns:folding:{token}"

    def pattern_folding(self) -> str:
        """Sorted set: folding hashes by hand-off time (ms), so a crashed folder's are found."""
        return f"{self.base}:patterns:folding"

    def pattern_unmatched(self, day: str) -> str:
        """Sorted set: one day's most frequent failure messages that no pattern matched."""
        return f"{self.base}:patterns:unmatched:{day}"

    # --- pub/sub channels -----------------------------------------------------------------------
    def wake_channel(self, service: str) -> str:
        """Channel: a job of this service became pending; idle workers of it try a claim."""
        return f"{self.base}:wake:{service}"

    def control_channel(self, worker_id: str) -> str:
        """Channel: commands to one worker (cancel the running job)."""
        return f"{self.base}:control:{worker_id}"

    def events_channel(self) -> str:
        """Channel: every job event of the queue, for live fan-out."""
        return f"{self.base}:events"

    def revocations_channel(self) -> str:
        """Channel: a token, a session or a user's access ended; every web process drops its
        cached credentials and closes the sockets they opened."""
        return f"{self.base}:revocations"

    def patterns_channel(self) -> str:
        """Channel: a new error-pattern snapshot version was saved; workers re-read it."""
        return f"{self.base}:patterns:announce"
