"""The network layer's firewall on nftables (libnftables in-process): masquerade, isolation,
internal networks and published ports, in sampan's own table only (NftFirewall)."""
