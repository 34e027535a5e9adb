"""``python -m faas_cli``: the same as the ``faas`` script."""

from faas_cli.app import main

main()
