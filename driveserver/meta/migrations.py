"""Numbered schema migrations; ``PRAGMA user_version`` records how many have been applied.

Never edit a migration that has shipped: append a new one. Statements are separated by ``;``
at the end of a line.
"""

MIGRATIONS: list[str] = [
    # 1: accounts, devices, workspaces, the file tree, versions, blocks, journal, shares.
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        email_key TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        quota_bytes INTEGER NOT NULL,
        workspace_id TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        removed_at REAL,
        cursor TEXT
    );
    CREATE INDEX devices_user ON devices(user_id);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        device_id TEXT REFERENCES devices(id),
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL,
        root_id TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        parent_id TEXT REFERENCES files(id),
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        is_directory INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        checksum TEXT,
        created_at REAL NOT NULL,
        modified_at REAL NOT NULL,
        trashed_at REAL,
        trash_root_id TEXT,
        trashed_by TEXT,
        trashed_path TEXT
    );
    CREATE UNIQUE INDEX files_live_name ON files(parent_id, name_key) WHERE trashed_at IS NULL;
    CREATE INDEX files_parent ON files(parent_id);
    CREATE INDEX files_workspace_trash ON files(workspace_id, trashed_at);
    CREATE INDEX files_trash_root ON files(trash_root_id);
    CREATE TABLE file_versions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        size INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        chunking TEXT NOT NULL,
        created_at REAL NOT NULL,
        user_id TEXT NOT NULL,
        device_id TEXT,
        restored_from INTEGER,
        UNIQUE (file_id, version)
    );
    CREATE TABLE version_blocks (
        version_id INTEGER NOT NULL REFERENCES file_versions(id) ON DELETE CASCADE,
        ord INTEGER NOT NULL,
        block_hash TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (version_id, ord)
    );
    CREATE INDEX version_blocks_hash ON version_blocks(block_hash);
    CREATE TABLE blocks (
        hash TEXT PRIMARY KEY,
        object_name TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        tier TEXT NOT NULL DEFAULT 'hot'
    );
    CREATE TABLE journal (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id),
        seq INTEGER NOT NULL,
        file_id TEXT NOT NULL,
        action TEXT NOT NULL,
        path TEXT NOT NULL,
        old_path TEXT,
        is_directory INTEGER NOT NULL,
        version INTEGER NOT NULL,
        size INTEGER NOT NULL,
        checksum TEXT,
        user_id TEXT NOT NULL,
        device_id TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, seq)
    );
    CREATE INDEX journal_file ON journal(file_id);
    CREATE TABLE shares (
        id TEXT PRIMARY KEY,
        file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        grantee_id TEXT NOT NULL REFERENCES users(id),
        permission TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (file_id, grantee_id)
    );
    CREATE INDEX shares_grantee ON shares(grantee_id)
    """,
    # 2: change feed bookkeeping: how far each workspace's journal was pruned (older cursors are
    # reset), notifications for people, and how far the notifier has read each journal.
    """
    CREATE TABLE journal_floors (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
        pruned_through INTEGER NOT NULL
    );
    CREATE INDEX journal_created ON journal(created_at);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL REFERENCES users(id),
        workspace_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        action TEXT NOT NULL,
        path TEXT NOT NULL,
        is_directory INTEGER NOT NULL,
        seq INTEGER,
        count INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        read_at REAL
    );
    CREATE INDEX notifications_user ON notifications(user_id, id);
    CREATE INDEX notifications_unread ON notifications(user_id, file_id, actor_id, action)
        WHERE read_at IS NULL;
    CREATE TABLE notify_marks (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
        seq INTEGER NOT NULL
    )
    """,
    # 3: sharing: the name a shared folder has under the recipient's "/Shared with me", and
    # links that let anyone with the URL read a file or folder.
    """
    ALTER TABLE shares ADD COLUMN mount_name TEXT NOT NULL DEFAULT '';
    CREATE TABLE links (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        created_by TEXT NOT NULL REFERENCES users(id),
        created_at REAL NOT NULL,
        expires_at REAL,
        password_hash TEXT,
        allow_download INTEGER NOT NULL DEFAULT 1,
        revoked_at REAL
    );
    CREATE INDEX links_file ON links(file_id)
    """,
    # 4: the exec bit, a property of each version (as Syncthing and Dropbox keep it): a chmod
    # +x is a new version with the same blocks, and every device hears of it in the feed.
    """
    ALTER TABLE files ADD COLUMN executable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE file_versions ADD COLUMN executable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN executable INTEGER NOT NULL DEFAULT 0
    """,
    # 5: symbolic links, a property of each version too: a symlink is a file whose content is
    # its target (a relative path inside the synced folder).
    """
    ALTER TABLE files ADD COLUMN symlink INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE file_versions ADD COLUMN symlink INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN symlink INTEGER NOT NULL DEFAULT 0
    """,
    # 6: grants the server can take back and bound (issue 12, findings 8 and 13). Each upload
    # grant's byte budget for its whole life, with the blocks already counted against it (a
    # retried block is not counted twice); the epochs a grant was minted under, per user
    # (bumped by a password change) and per share (bumped when the share is revoked).
    """
    ALTER TABLE users ADD COLUMN grant_epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE share_epochs (
        folder_id TEXT NOT NULL,
        grantee_id TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        PRIMARY KEY (folder_id, grantee_id)
    ) WITHOUT ROWID;
    CREATE TABLE upload_grants (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        max_bytes INTEGER NOT NULL,
        used_bytes INTEGER NOT NULL DEFAULT 0,
        epochs TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX upload_grants_expiry ON upload_grants(expires_at);
    CREATE TABLE upload_grant_blocks (
        grant_id TEXT NOT NULL REFERENCES upload_grants(id) ON DELETE CASCADE,
        block_hash TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (grant_id, block_hash)
    ) WITHOUT ROWID
    """,
    # 7: when each share was given, as the position its folder's journal had then: entries up
    # to it happened before the recipient had access, so neither the feed nor notifications
    # show them (a re-share is a new grant). Shares made before this: 0, all of the journal.
    # And workspaces by owner: every feed request reads the user's (meta.mounts.mounts_for).
    """
    ALTER TABLE shares ADD COLUMN granted_seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX workspaces_owner ON workspaces(owner_id)
    """,
    # 8: GC deletes store objects outside any transaction (issue 13, item 3). A tombstone names
    # an object GC has decided to delete (recorded in ``blocks`` or an orphan no row records),
    # committed before the delete and dropped after it; ``complete`` treats a tombstoned block
    # as missing. ``gc_epoch.dropped`` counts the transactions that dropped tombstones: a
    # ``complete`` whose look-up in the store straddles one asks again (see driveserver/gc.py).
    """
    CREATE TABLE block_tombstones (
        object_name TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE gc_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        dropped INTEGER NOT NULL
    );
    INSERT INTO gc_epoch (id, dropped) VALUES (1, 0)
    """,
    # 9: repair what finding 6 of issue 12 left in databases from before its fix: a file restored
    # from the trash out of a shared folder kept that folder's workspace, so its later edits
    # went on reaching the share's recipients. Every item's workspace is made what the tree
    # says it is (a shared folder's own for what is inside it, else the parent's), walking
    # down from the roots; items that already agree are left alone, so this changes nothing
    # in a consistent database.
    """
    WITH RECURSIVE want(id, ws) AS (
        SELECT id, workspace_id FROM files WHERE parent_id IS NULL
        UNION ALL
        SELECT c.id, COALESCE((SELECT w.id FROM workspaces w
                               WHERE w.root_id = want.id AND w.kind = 'shared'), want.ws)
        FROM files c JOIN want ON c.parent_id = want.id
    )
    UPDATE files SET workspace_id = (SELECT ws FROM want WHERE want.id = files.id)
    WHERE id IN (SELECT want.id FROM want JOIN files f ON f.id = want.id
                 WHERE f.workspace_id != want.ws)
    """,
    # 10: search by name (issue 14). ``file_names`` is an FTS5 index, trigram tokenizer, of
    # every item's name key (NFC, case-folded: the key names are unique by), so a substring of
    # three or more characters is found from the index instead of a scan of ``files``. Its
    # rows are those of ``file_search_keys`` (external content), whose integer key ``n`` is
    # the number of the item's owner (``search_owners``; the owner of its workspace, which no
    # move changes) in the high bits and a sequence number (``search_seq``, creation order) in
    # the low 40: each owner's items are one range of keys, so a search reads only the index
    # entries of the owners whose items the asker sees. Triggers keep it current whatever unit
    # of work inserts, renames or deletes an item (trashed items too: the search leaves those
    # out), and re-key an item whose workspace changes owner (nothing does that today).
    # ``meta/search.py`` says what PostgreSQL would use instead. Inside a trigger body, a ";"
    # starts a line: this file's statements end at ";" + newline.
    """
    CREATE TABLE search_owners (
        no INTEGER PRIMARY KEY,
        user_id TEXT NOT NULL UNIQUE
    );
    CREATE TABLE search_seq (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    );
    CREATE TABLE file_search_keys (
        n INTEGER PRIMARY KEY,
        file_id TEXT NOT NULL UNIQUE,
        name_key TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE file_names USING fts5(
        name_key, content = 'file_search_keys', content_rowid = 'n',
        tokenize = 'trigram case_sensitive 1', columnsize = 0
    );
    INSERT INTO search_owners (user_id) SELECT id FROM users ORDER BY created_at, id;
    INSERT INTO file_search_keys (n, file_id, name_key)
        SELECT (o.no << 40) | ROW_NUMBER() OVER (ORDER BY f.created_at, f.id), f.id, f.name_key
        FROM files f JOIN workspaces w ON w.id = f.workspace_id
        JOIN search_owners o ON o.user_id = w.owner_id;
    INSERT INTO search_seq (id, value) SELECT 1, COUNT(*) FROM files;
    INSERT INTO file_names (file_names) VALUES ('rebuild');
    CREATE TRIGGER users_search_number AFTER INSERT ON users BEGIN
        INSERT INTO search_owners (user_id) VALUES (new.id)
        ; END;
    CREATE TRIGGER files_search_insert AFTER INSERT ON files BEGIN
        UPDATE search_seq SET value = value + 1
        ; INSERT INTO file_search_keys (n, file_id, name_key)
          SELECT (o.no << 40) | s.value, new.id, new.name_key
          FROM workspaces w JOIN search_owners o ON o.user_id = w.owner_id, search_seq s
          WHERE w.id = new.workspace_id
        ; INSERT INTO file_names (rowid, name_key)
          SELECT n, name_key FROM file_search_keys WHERE file_id = new.id
        ; END;
    CREATE TRIGGER files_search_rename AFTER UPDATE OF name_key ON files
        WHEN new.name_key IS NOT old.name_key BEGIN
        INSERT INTO file_names (file_names, rowid, name_key)
          SELECT 'delete', n, name_key FROM file_search_keys WHERE file_id = old.id
        ; UPDATE file_search_keys SET name_key = new.name_key WHERE file_id = old.id
        ; INSERT INTO file_names (rowid, name_key)
          SELECT n, name_key FROM file_search_keys WHERE file_id = old.id
        ; END;
    CREATE TRIGGER files_search_owner AFTER UPDATE OF workspace_id ON files
        WHEN (SELECT owner_id FROM workspaces WHERE id = new.workspace_id)
          IS NOT (SELECT owner_id FROM workspaces WHERE id = old.workspace_id) BEGIN
        INSERT INTO file_names (file_names, rowid, name_key)
          SELECT 'delete', n, name_key FROM file_search_keys WHERE file_id = old.id
        ; UPDATE file_search_keys SET n = ((SELECT o.no FROM workspaces w
          JOIN search_owners o ON o.user_id = w.owner_id WHERE w.id = new.workspace_id) << 40)
          | (n & 1099511627775) WHERE file_id = old.id
        ; INSERT INTO file_names (rowid, name_key)
          SELECT n, name_key FROM file_search_keys WHERE file_id = old.id
        ; END;
    CREATE TRIGGER files_search_delete AFTER DELETE ON files BEGIN
        INSERT INTO file_names (file_names, rowid, name_key)
          SELECT 'delete', n, name_key FROM file_search_keys WHERE file_id = old.id
        ; DELETE FROM file_search_keys WHERE file_id = old.id
        ; END
    """,
    # 11: app passwords (issue 16): passwords a user makes per app or device for HTTP Basic on
    # /dav/, shown once and stored hashed (scrypt, as account passwords). Each has a device of
    # its own (type 'app', listed in GET /api/devices) and one long-lived session, so revoking
    # the password, removing the device or changing the account password ends it through the
    # sessions every other client already lives by. ``lookup`` is the first group of the
    # password, unique per user, so a Basic request costs one scrypt check, not one per password.
    """
    CREATE TABLE app_passwords (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        session_id TEXT NOT NULL REFERENCES sessions(id),
        name TEXT NOT NULL,
        lookup TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL,
        revoked_at REAL
    );
    CREATE INDEX app_passwords_user ON app_passwords(user_id, lookup)
    """,
    # 12: WebDAV (issue 16): dead properties set by PROPPATCH, per item (its XML element as the
    # client sent it), and write locks (RFC 4918), kept in the database so that a second server
    # process sees them. Both go with their item when it is deleted for good.
    """
    CREATE TABLE dav_properties (
        file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (file_id, namespace, name)
    );
    CREATE TABLE dav_locks (
        token TEXT PRIMARY KEY,
        file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users(id),
        scope TEXT NOT NULL,
        depth INTEGER NOT NULL,
        owner TEXT NOT NULL,
        root TEXT NOT NULL,
        timeout REAL NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX dav_locks_file ON dav_locks(file_id);
    CREATE INDEX dav_locks_expiry ON dav_locks(expires_at)
    """,
    # 13: the password-check throttle (issue 18), in the database so that every server process
    # behind a proxy counts the same guesses (driveserver/meta/throttles.py). Per key (an
    # account, a link, a session's password change, a client address or IPv6 /64): the
    # failures since the last success and when the last one was; and the checks running now,
    # one row per key each counts against, as leases that expire (a process killed during a
    # check must not hold a slot for ever).
    """
    CREATE TABLE throttle_failures (
        name TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_failed_at REAL NOT NULL
    );
    CREATE INDEX throttle_failures_age ON throttle_failures(last_failed_at);
    CREATE TABLE throttle_checks (
        name TEXT NOT NULL,
        check_id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (name, check_id)
    );
    CREATE INDEX throttle_checks_expiry ON throttle_checks(expires_at)
    """,
]
