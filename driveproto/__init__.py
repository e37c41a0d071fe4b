"""What the sync client and the server must agree on, and nothing else.

Both sides import this package; neither side's own code is in it, and it depends on nothing but
the standard library, zstandard and pyfastcdc. So ``drive-sync`` stands on it alone and never loads a
server module (the base install has none of the server's dependencies), and a change to the
protocol is a change to one place that both sides see.

* :mod:`driveproto.blocks` — block size and chunking scheme, block hashing, ``hash_file``,
  ``content_checksum`` (a file's identity on both sides);
* :mod:`driveproto.chunking` — the chunking schemes by name (fixed 4 MiB, FastCDC), cutting a
  file or bytes by one, ``file_identity`` (a file compared like with like across schemes);
* :mod:`driveproto.patches` — a block as a zstd patch against blocks the other side holds,
  piece signatures, which bases to patch against (docs/chunking.md);
* :mod:`driveproto.wire` — how one block travels (``identity`` or ``zstd``), bounded decoding;
* :mod:`driveproto.frames` — the bodies of ``POST /blocks/batch`` and
  ``POST /api/files/content/batch``, encoder and parser;
* :mod:`driveproto.names` — the name rules the client checks before it uploads, ``name_key``,
  ``SHARED_ROOT``;
* :mod:`driveproto.replies` — the JSON replies the client reads, as TypedDicts;
* :mod:`driveproto.codes` — the error codes the client branches on.
"""
