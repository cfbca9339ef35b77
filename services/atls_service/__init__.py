"""The ATLS service: the ATLS endpoint, session store and APIs."""
