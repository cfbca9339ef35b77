"""Interop runner: implementations behind one contract, the middlebox between them.

One matrix (servers x clients) per test case; see interop/CONTRACT.md.
"""
