-- Core tables. Plain PostgreSQL; 0002 turns them into TimescaleDB objects where the
-- extension is available.

-- One row per reading (event_id), keyed by its identity: device, channel and interval end.
-- (Interval start is not an identity for register deltas: it moves when an out-of-order
-- reading is placed before a reading.) A row is replaced only by a higher revision, or an
-- equal revision with a newer source version stamp (updated_at).
CREATE TABLE IF NOT EXISTS readings (
    device_id      text             NOT NULL CHECK (length(device_id) BETWEEN 1 AND 64),
    channel        text             NOT NULL CHECK (channel ~ '^[A-Za-z0-9]{1,8}$'),
    ts_end         timestamptz      NOT NULL,
    ts_start       timestamptz      CHECK (ts_start IS NULL OR ts_start < ts_end),
    event_id       text             NOT NULL,
    kind           text             NOT NULL CHECK (kind IN ('register', 'interval')),
    value_kwh      double precision NOT NULL,
    register_kwh   double precision,
    delta_kwh      double precision,
    unit           text             NOT NULL,
    quality        text             NOT NULL CHECK (quality IN ('A', 'E', 'F', 'S', 'N', 'V')),
    method         text,
    reason_code    integer,
    flags          text[]           NOT NULL DEFAULT '{}',
    revision       integer          NOT NULL CHECK (revision >= 0),
    updated_at     timestamptz,
    source         text,
    ingested_at    timestamptz      NOT NULL,
    original_value double precision NOT NULL,
    original_unit  text             NOT NULL,
    interval_s     integer,
    stored_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, channel, ts_end)
);
CREATE INDEX IF NOT EXISTS readings_ts_end_idx ON readings (ts_end);
CREATE INDEX IF NOT EXISTS readings_event_id_idx ON readings (event_id);

-- One row per anomaly type per reading; the highest revision wins, cleared ones are kept.
CREATE TABLE IF NOT EXISTS anomalies (
    anomaly_id  text             PRIMARY KEY,
    event_id    text             NOT NULL,
    device_id   text             NOT NULL,
    channel     text             NOT NULL,
    ts_end      timestamptz      NOT NULL,
    type        text             NOT NULL,
    score       double precision NOT NULL,
    detail      text             NOT NULL,
    revision    integer          NOT NULL CHECK (revision >= 0),
    cleared     boolean          NOT NULL,
    detected_at timestamptz      NOT NULL,
    stored_at   timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS anomalies_device_ts_idx ON anomalies (device_id, ts_end);
CREATE INDEX IF NOT EXISTS anomalies_type_ts_idx ON anomalies (type, ts_end);

-- Every raw message exactly as it arrived (nothing original is ever lost).
CREATE TABLE IF NOT EXISTS raw_audit (
    topic        text        NOT NULL,
    "partition"  integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    key          bytea,
    value        bytea,
    broker_ts    timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", "offset")
);
CREATE INDEX IF NOT EXISTS raw_audit_broker_ts_idx ON raw_audit (broker_ts);

-- Consumption per device and channel, bucketed by interval end. Plain views here; on
-- TimescaleDB, 0002 replaces them with continuous aggregates of the same shape.
CREATE OR REPLACE VIEW readings_15m AS
SELECT device_id, channel, date_bin('15 minutes', ts_end, TIMESTAMPTZ '2000-01-01') AS bucket,
       sum(delta_kwh) AS kwh, count(delta_kwh) AS readings, min(delta_kwh) AS min_kwh, max(delta_kwh) AS max_kwh
FROM readings WHERE unit = 'kWh' GROUP BY 1, 2, 3;
CREATE OR REPLACE VIEW readings_1h AS
SELECT device_id, channel, date_bin('1 hour', ts_end, TIMESTAMPTZ '2000-01-01') AS bucket,
       sum(delta_kwh) AS kwh, count(delta_kwh) AS readings, min(delta_kwh) AS min_kwh, max(delta_kwh) AS max_kwh
FROM readings WHERE unit = 'kWh' GROUP BY 1, 2, 3;
CREATE OR REPLACE VIEW readings_1d AS
SELECT device_id, channel, date_bin('1 day', ts_end, TIMESTAMPTZ '2000-01-01') AS bucket,
       sum(delta_kwh) AS kwh, count(delta_kwh) AS readings, min(delta_kwh) AS min_kwh, max(delta_kwh) AS max_kwh
FROM readings WHERE unit = 'kWh' GROUP BY 1, 2, 3;
