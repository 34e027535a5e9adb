"""Shared library of the FaaS platform services. Never run on its own.

Import the module you need: ``faas_common.contract`` (the messaging contract),
``faas_common.executions`` (execution records), ``faas_common.nats``, ``faas_common.kvwatch`` (a
bucket watched into memory), ``faas_common.revocation`` (token revocation), ``faas_common.images``
(image references and the image policy), ``faas_common.settings`` and ``faas_common.logging``
need only pydantic and nats-py; ``faas_common.metrics`` (the Prometheus metrics and the metrics
port) prometheus-client as well. The web helpers (``errors``, ``http``, ``http_metrics``,
``health``, ``security``) need the ``web`` extra, ``edge`` (the HTTP limits every server runs
behind) uvicorn as well, ``db`` the ``db`` extra; only the services that serve HTTP or own a
database install and import them.
"""
