"""The data layer: every statement that reads or writes ``pq_tasks``, ``pq_periodic`` and
``pq_workers``, each named, with a docstring that says what it guarantees.

- :mod:`~django_pq.store.tasks`: the application's writes (enqueue, upsert, cancel, retry,
  run now), on Django's connection, inside the caller's transaction.
- :mod:`~django_pq.store.worker`: the worker's claim, finish, heartbeat, reap, orphans and
  prune, on its own connection; the testing helpers claim with the same statement.
- :mod:`~django_pq.store.schedules`: firing due schedules, and "run now".
- :mod:`~django_pq.store.reads`: the read side (status, dashboard, metrics).

Nothing outside this package writes SQL against those tables (``tests/test_layers.py``
greps for it); the ORM's querysets (the admin's lists, ``Task.objects``) are the other way
in. Notification payloads come from :mod:`django_pq.notify`, never from here.
"""
