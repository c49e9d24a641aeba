"""Modules a hostile row may name: each misbehaves on import or holds no callable.

The property test (``test_total_inputs.py``) and the soak allow this package explicitly
(``PQ_ALLOWED_MODULES``), so a row naming one of them reaches the import: the worker must
fail that task as ``unknown_task`` and carry on, whatever the import does.
"""
