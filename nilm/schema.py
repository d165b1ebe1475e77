"""The DuckDB schema, as SQL text: the tables that outside scripts read (see CONTRACT.md).

Pure: this module holds strings only; whoever owns the connection runs them. Every table has a
key that makes writes idempotent, so at-least-once delivery stores each row once.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS_SQL", "SCHEMA_SQL", "TABLES"]

TABLES = (
    "readings",
    "rejected",
    "events",
    "labels",
    "activations",
    "alerts",
    "clusters",
    "event_windows",
)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS readings (
    home_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    seq BIGINT,
    a_voltage DOUBLE, a_current DOUBLE, a_act_power DOUBLE, a_aprt_power DOUBLE,
    a_pf DOUBLE, a_freq DOUBLE,
    b_voltage DOUBLE, b_current DOUBLE, b_act_power DOUBLE, b_aprt_power DOUBLE,
    b_pf DOUBLE, b_freq DOUBLE,
    PRIMARY KEY (home_id, ts)
);
CREATE TABLE IF NOT EXISTS rejected (
    rejection_id VARCHAR PRIMARY KEY,
    home_id VARCHAR NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    source_key VARCHAR,
    raw VARCHAR,
    reason VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR PRIMARY KEY,
    home_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    legs VARCHAR NOT NULL,
    delta_p_w DOUBLE NOT NULL,
    device VARCHAR,
    confidence DOUBLE,
    novelty DOUBLE,
    uncertainty DOUBLE,
    cluster_id VARCHAR,
    delta_q_var DOUBLE,
    delta_s_va DOUBLE,
    delta_current_a DOUBLE,
    delta_pf DOUBLE,
    p_before_w DOUBLE,
    p_after_w DOUBLE,
    delta_p_a_w DOUBLE,
    delta_p_b_w DOUBLE,
    voltage_v DOUBLE,
    inrush_peak_w DOUBLE,
    ramp_s DOUBLE,
    settle_slope_w_per_s DOUBLE,
    detector VARCHAR,
    labelled BOOLEAN DEFAULT FALSE,
    -- a provisional row may still be refined or removed (nilm.provisional); a final one stays
    provisional BOOLEAN DEFAULT FALSE,
    -- the wall-clock time the row was first written, kept on later updates
    detected_at TIMESTAMPTZ
);
CREATE SEQUENCE IF NOT EXISTS labels_label_id START 1;
CREATE TABLE IF NOT EXISTS labels (
    label_id BIGINT PRIMARY KEY DEFAULT nextval('labels_label_id'),
    event_id VARCHAR NOT NULL,
    device VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    home_id VARCHAR,
    source VARCHAR
);
CREATE TABLE IF NOT EXISTS activations (
    activation_id VARCHAR PRIMARY KEY,
    home_id VARCHAR NOT NULL,
    device VARCHAR,
    legs VARCHAR NOT NULL,
    on_event_id VARCHAR NOT NULL,
    off_event_id VARCHAR,
    start_ts TIMESTAMPTZ NOT NULL,
    end_ts TIMESTAMPTZ,
    power_w DOUBLE,
    off_power_w DOUBLE,
    duration_s DOUBLE,
    energy_wh DOUBLE,
    abandoned BOOLEAN DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY,
    home_id VARCHAR NOT NULL,
    device VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    metric VARCHAR NOT NULL,
    since_ts TIMESTAMPTZ,
    before_value DOUBLE,
    after_value DOUBLE,
    message VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS clusters (
    cluster_id VARCHAR PRIMARY KEY,
    home_id VARCHAR NOT NULL,
    n_events BIGINT,
    typical_delta_p_w DOUBLE,
    legs VARCHAR,
    first_seen TIMESTAMPTZ,
    last_seen TIMESTAMPTZ,
    name VARCHAR
);
"""

# Columns added after the first release, for database files made before them.
MIGRATIONS_SQL = """
ALTER TABLE activations ADD COLUMN IF NOT EXISTS off_power_w DOUBLE;
ALTER TABLE activations ADD COLUMN IF NOT EXISTS duration_s DOUBLE;
ALTER TABLE activations ADD COLUMN IF NOT EXISTS abandoned BOOLEAN DEFAULT FALSE;
ALTER TABLE clusters ADD COLUMN IF NOT EXISTS first_seen TIMESTAMPTZ;
ALTER TABLE events ADD COLUMN IF NOT EXISTS provisional BOOLEAN DEFAULT FALSE;
ALTER TABLE events ADD COLUMN IF NOT EXISTS detected_at TIMESTAMPTZ;
"""

# Each event's power trajectory (`nilm.batch.windows.window_row`): `window` holds `channels` rows
# of `samples` values, channel-major, from `before_s` seconds before the event's second
# (`window` is an SQL keyword: quote it, "window").
SCHEMA_SQL += """
CREATE TABLE IF NOT EXISTS event_windows (
    event_id VARCHAR PRIMARY KEY,
    home_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    before_s INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    "window" FLOAT[] NOT NULL
);
"""
