"""sampan: a container engine built from the Linux kernel up.

Layers, lowest first: linux -> oci -> runtime -> image, network -> engine -> api, cli.
"""
__version__ = "0.1.0"
