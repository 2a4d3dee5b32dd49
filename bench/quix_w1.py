"""Quix Streams doing the W1 workload: the baseline of issue 8, run in its own virtualenv
(``bench/.venv-quix``, made by ``bench/workloads.py``: Quix pins confluent-kafka < 2.13,
older than ours).

    bench/.venv-quix/bin/python bench/quix_w1.py BOOTSTRAP RAW_TOPIC OUT_TOPIC STATE_DIR GROUP

Per reading, with Quix's RocksDB state keyed by device: parse the JSON, keep the last
register value per channel and the delta from it (a counter reset gives a null delta; an
older or equal timestamp is flagged and changes no state), emit one record per reading to
OUT_TOPIC; and a 15-minute tumbling window summing the deltas per device (event time from
the reading), emitted as windows close. At-least-once, and the worker's session timeout and heartbeat;
Quix's defaults otherwise.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from quixstreams import Application, State
from quixstreams.models import TimestampType


def _ms(ts: Any) -> int:
    if isinstance(ts, int):
        return ts
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def ts_ms(value: Any, headers: Any, timestamp: int, timestamp_type: TimestampType) -> int:
    return _ms(value["ts"])


def normalize(value: dict[str, Any], state: State) -> dict[str, Any]:
    key = value.get("channel", "E1")
    last = state.get(key)
    ts = _ms(value["ts"])
    reading = float(value["value"]) * (0.001 if value.get("unit") == "Wh" else 1.0)
    out = {"device_id": value["device_id"], "channel": key, "ts": ts, "value_kwh": reading, "flags": []}
    if last is not None and ts <= last[0]:
        out["flags"] = ["duplicate" if ts == last[0] else "out_of_order"]
        out["delta_kwh"] = None
        return out
    if last is None:
        out["delta_kwh"] = None
    elif value.get("kind") == "register":
        delta = reading - last[1]
        out["delta_kwh"] = delta if delta >= 0 else None
        if delta < 0:
            out["flags"] = ["counter_reset"]
    else:
        out["delta_kwh"] = reading
    state.set(key, [ts, reading])
    return out


def main() -> None:
    bootstrap, raw, out, state_dir, group = sys.argv[1:6]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        processing_guarantee="at-least-once",
        loglevel="WARNING",
        # The worker's group settings (AURORA_SESSION_TIMEOUT_S, AURORA_HEARTBEAT_INTERVAL_S),
        # so both join their groups on equal terms.
        consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000},
    )
    readings = app.topic(raw, value_deserializer="json", timestamp_extractor=ts_ms)
    normalized = app.topic(out, value_serializer="json")
    windows = app.topic(f"{out}.windows", value_serializer="json")
    sdf = app.dataframe(readings)
    sdf = sdf.apply(normalize, stateful=True)
    sdf.to_topic(normalized)
    energy = sdf.apply(lambda v: v["delta_kwh"] or 0.0)
    energy.tumbling_window(duration_ms=15 * 60_000).sum().final().to_topic(windows)
    app.run()


if __name__ == "__main__":
    main()
