"""Integrations with frameworks, each an optional extra: nothing in the core imports them."""
