"""A tiny Django project for benchmarking django-tasks-db (settings, and tasks in tasks.py)."""
