"""Linkdesk core: MoneyKit client, store, services. Free of any UI framework."""

__version__ = "0.1.0"
