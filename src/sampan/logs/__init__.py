"""Container logs: Docker's json-file format, its writer (used by the supervisor) and its
reader (used by the engine for `logs`), side by side in jsonfile.py."""
