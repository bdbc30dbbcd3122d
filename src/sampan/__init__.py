"""sampan: a container engine built from the Linux kernel up.

Layers, lowest first: linux -> oci -> runtime -> image, network -> engine -> api, cli.
"""
__version__ = "0.1.0"
API_VERSION = "1.45"      # the Docker Engine API version sampand speaks
MIN_API_VERSION = "1.24"  # the oldest it accepts, as dockerd
