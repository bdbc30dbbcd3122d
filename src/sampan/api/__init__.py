"""The Docker Engine API daemon (sampand): aiohttp on a unix socket, in front of engine/.
app.py (middleware: versions, errors), backend.py (what routes call), routes/ (one module a
resource), hijack.py, workers.py, progress.py, image_service.py. Only this package imports
aiohttp; the CLI stays light."""
