"""Servers and jobs the tests start: an MLServer runtime, a faulty HTTP server, a dataset-run job."""
