#!/usr/bin/env python
"""The example project's command line: ``python example_project/manage.py demo``."""

import os
import sys
from pathlib import Path

# The throwaway PostgreSQL (devdb.py) lives at the repository root, outside the package;
# appended, so an installed django-pq still comes before the repository's copy.
sys.path.append(str(Path(__file__).resolve().parent.parent))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
