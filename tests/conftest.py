"""Shared fixtures. The database is a real PostgreSQL (see django_pq/devdb.py)."""
