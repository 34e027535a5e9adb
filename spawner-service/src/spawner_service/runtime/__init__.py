"""Container runtimes behind one protocol (``base``); ``docker`` is the Docker SDK adapter."""

from spawner_service.runtime.base import ContainerRuntime, Outcome, RunResult, RunSpec

__all__ = ["ContainerRuntime", "Outcome", "RunResult", "RunSpec"]
