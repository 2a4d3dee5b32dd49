-- TimescaleDB only (applied when the extension is available; skipped, and retried on the
-- next migrate, where it is not).
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings', by_range('ts_end', INTERVAL '7 days'),
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('raw_audit', by_range('broker_ts', INTERVAL '7 days'),
                         migrate_data => true, if_not_exists => true);

-- Old chunks are compressed; revisions into them still work (TimescaleDB >= 2.11 DML).
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id, channel',
                          timescaledb.compress_orderby = 'ts_end');
SELECT add_compression_policy('readings', INTERVAL '30 days', if_not_exists => true);

DROP VIEW IF EXISTS readings_15m;
DROP VIEW IF EXISTS readings_1h;
DROP VIEW IF EXISTS readings_1d;

-- Continuous aggregates are invalidated by inserts and updates in the buckets they cover,
-- so late and revised readings are re-aggregated on the next refresh; the policies look
-- back 90 days.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_15m WITH (timescaledb.continuous) AS
SELECT device_id, channel, time_bucket(INTERVAL '15 minutes', ts_end) AS bucket,
       sum(delta_kwh) AS kwh, count(delta_kwh) AS readings, min(delta_kwh) AS min_kwh, max(delta_kwh) AS max_kwh
FROM readings WHERE unit = 'kWh' GROUP BY device_id, channel, bucket WITH NO DATA;
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h WITH (timescaledb.continuous) AS
SELECT device_id, channel, time_bucket(INTERVAL '1 hour', ts_end) AS bucket,
       sum(delta_kwh) AS kwh, count(delta_kwh) AS readings, min(delta_kwh) AS min_kwh, max(delta_kwh) AS max_kwh
FROM readings WHERE unit = 'kWh' GROUP BY device_id, channel, bucket WITH NO DATA;
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d WITH (timescaledb.continuous) AS
SELECT device_id, channel, time_bucket(INTERVAL '1 day', ts_end) AS bucket,
       sum(delta_kwh) AS kwh, count(delta_kwh) AS readings, min(delta_kwh) AS min_kwh, max(delta_kwh) AS max_kwh
FROM readings WHERE unit = 'kWh' GROUP BY device_id, channel, bucket WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_15m', start_offset => INTERVAL '90 days',
       end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '5 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '90 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('readings_1d', start_offset => INTERVAL '90 days',
       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour', if_not_exists => true);
