"""The read side of the dashboard, one module per screen: what a page shows, computed once for
every session that shows it, from rollups and indexed reads rather than scans of whole tables.
Built once in :mod:`linkdesk.bootstrap` and handed to the pages through the services."""
