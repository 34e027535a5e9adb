"""spawner-service: runs activations from the EXECUTIONS stream in fresh, hardened containers.

No HTTP API: ``python -m spawner_service`` runs the ``Worker`` (``worker.py``) over a
``ContainerRuntime`` (``runtime/``; ``DockerRuntime`` is the Docker SDK adapter).
"""
