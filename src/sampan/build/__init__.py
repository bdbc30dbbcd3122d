"""Build: Dockerfiles to images. dockerfile/ parses, context.py and copy.py handle sources, builder.py runs the steps with a
content-keyed cache (cache.py)."""
