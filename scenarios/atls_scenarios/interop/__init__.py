"""Interop runner: implementations behind one contract, the middlebox between them, a matrix per test case."""
