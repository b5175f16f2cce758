"""``python -m process_balancer`` runs the CLI."""

from .cli import main

main()
