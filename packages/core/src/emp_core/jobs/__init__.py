"""Jobs: what a job is (spec, record, status), its requirements, a worker's capabilities, the pure
matching rules between them, and the events a job emits."""
