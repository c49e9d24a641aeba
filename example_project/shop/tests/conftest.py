"""django-pq's testing fixture (``pq_capture``) for the shop's tests."""

from django_pq.testing import pq_capture  # noqa: F401 - makes the fixture available here
