"""The forking worker: ``WorkerLoop`` runs it, ``WorkerConfig`` configures it."""

from django_pq.worker.config import ConfigError, WorkerConfig
from django_pq.worker.loop import ExitCode, WorkerLoop

__all__ = ["ConfigError", "ExitCode", "WorkerConfig", "WorkerLoop"]
