"""System checks: the database must be PostgreSQL, and each PQ_* setting must be valid."""
