"""Files: atomic writes and checksums, and the one reader of weight files."""
