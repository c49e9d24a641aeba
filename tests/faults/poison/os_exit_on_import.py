"""Importing this ends the importing process at once with status 0 (``os._exit``)."""

import os

os._exit(0)
