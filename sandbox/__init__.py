"""Offline emulator of the MoneyKit REST API and hosted Connect UI.

Start it with ``python -m sandbox`` or build the ASGI app with ``sandbox.app.create_app``.
"""
