"""faas: the FaaS platform's command line, over the gateway's public HTTP API."""

__version__ = "0.1.0"
