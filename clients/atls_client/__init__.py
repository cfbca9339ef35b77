"""The device client: ATLS over HTTP, and its command line."""
