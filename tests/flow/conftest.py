"""The worker fixtures, for the flow-control tests."""

from tests.worker.conftest import start_worker  # noqa: F401 - a fixture
