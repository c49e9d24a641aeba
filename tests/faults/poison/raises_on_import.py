"""Importing this raises a plain exception (not an ImportError)."""

raise RuntimeError("tests.faults.poison.raises_on_import refuses to be imported")
