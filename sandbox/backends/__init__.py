"""The sandbox's behaviour split by MoneyKit area, one backend per area behind ``SandboxState``.

| module | area |
|---|---|
| ``auth`` | client credentials, access tokens and their scopes |
| ``institutions`` | the catalogue, lookup, search, outages |
| ``links`` | links, their products and the refresh lifecycle, state changes, data reads |
| ``imports`` | ``POST /links/import`` and imported transactions |
| ``connect`` | link sessions, the hosted Connect flow (credentials, MFA, OAuth), token exchange |
| ``webhooks`` | signed webhook events and the signing keys |

Dependencies point one way only: ``connect`` and ``imports`` use ``links``; ``links`` uses
``institutions`` and ``webhooks``; nothing here imports ``sandbox.state``.
"""
