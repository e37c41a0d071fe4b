"""What the web app shows of a file without downloading it: inline content and thumbnails."""
