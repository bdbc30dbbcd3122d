"""Images: content-addressed store, references and tags, layers, overlay snapshots,
archives (docker-archive, OCI layout) and the registry client."""
