"""The OCI runtime: turns a bundle into a container and manages its life.

Usable as a library (the engine forks from a warm process) and through the `sampan-runc` CLI.
"""
