"""The worker fixtures, for the flow-control tests."""

from tests.admin.conftest import (
    make_staff,  # noqa: F401 - a fixture
    staff_client,  # noqa: F401 - a fixture
)
from tests.worker.conftest import start_worker  # noqa: F401 - a fixture
