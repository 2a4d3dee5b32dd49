"""aurora-streams: real-time energy meter data on Kafka.

The package mirrors the data flow (see ``app.py``): ``domain`` holds the pure logic,
``codecs`` the wire formats, ``agents`` and ``tables`` the Faust parts, and ``cli`` the
``aurora-streams`` command.
"""

__version__ = "0.1.0"
