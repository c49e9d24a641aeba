"""django-pq: durable background tasks for Django on PostgreSQL."""

__version__ = "0.1.0"
