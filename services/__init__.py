"""The application services: every operation the CLI and the web offer, each owning its transaction and clock read."""
