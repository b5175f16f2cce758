"""The zero-service quickstart: see README.md in this directory."""
