"""Pure domain logic: units, time, flags, validation and the device state machine.

Nothing in this package imports Faust or Kafka, so the worker, the benchmark and the tests'
reference all run exactly the same code.
"""
