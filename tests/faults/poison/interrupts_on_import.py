"""Importing this raises KeyboardInterrupt, as a Ctrl-C arriving mid-import would."""

raise KeyboardInterrupt
