"""The OCI runtime and image specifications: parsing, validation, defaults.

Configs stay plain dicts as in config.json (cheap on the start path); this package checks them.
"""
