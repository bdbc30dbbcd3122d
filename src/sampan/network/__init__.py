"""Container networking: networks and their addresses (IPAM), network namespaces, the bridge
driver (bridge, veth pairs), /etc files, and the firewall behind a small protocol (firewall/)."""
