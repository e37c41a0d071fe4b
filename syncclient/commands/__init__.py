"""The ``drive-sync`` commands, one module per group; ``syncclient/cli.py`` parses the command
line and dispatches to them.

Each command is ``async def cmd_<name>(args, config_dir) -> int``, the exit status (``init`` also
takes the standard input it reads the password from). A command raises
:class:`~syncclient.errors.NotConfigured` for a usage or configuration error and
:class:`~syncclient.errors.SyncClientError` when the server said no or the folder is not in
sync; ``cli.main`` turns those into exit statuses 2 and 1. Nothing here imports ``cli``.
"""
