"""Internal state in Postgres (tracking, memo, setup records), the pool, the embedded server."""
