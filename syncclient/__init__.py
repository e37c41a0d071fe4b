"""``drive-sync``: the desktop sync client (see ``docs/sync-logic.md``)."""
