"""aurora-streams: real-time energy meter data on Kafka.

The package mirrors the data flow (see ``app.py``): ``domain`` holds the pure logic,
``codecs`` the wire formats, ``agents`` and ``tables`` the Faust parts, and ``cli`` the
``aurora-streams`` command.
"""

from aurora_streams.native import activate as _activate

__version__ = "0.1.0"

# Before any submodule: the compiled core replaces the pure modules only if it is current.
_activate()
