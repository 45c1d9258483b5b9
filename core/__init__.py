"""The core: settings, clock, domain types, the lease protocol and the run executor. Imports nothing above it."""
