"""Thin Faust agents: Kafka I/O around the pure :mod:`aurora_streams.processing`."""
