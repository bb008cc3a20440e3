"""The REST API and the ASGI app every surface is mounted on."""
