"""The Docker Engine API daemon (sampand): aiohttp on a unix socket, in front of engine/.
Only this package imports aiohttp; the CLI stays light."""
