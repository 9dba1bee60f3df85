"""Test support: fault injection, HTTP fault proxy, bad-image factory and the input benchmark."""
