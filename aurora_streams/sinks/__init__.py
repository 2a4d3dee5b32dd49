"""Sinks: durable stores downstream of the output topics."""
