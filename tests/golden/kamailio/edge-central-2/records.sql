PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    start_time TEXT,
    end_time TEXT,
    duration REAL,
    callid TEXT,
    edge TEXT,
    direction TEXT,
    trunk TEXT,
    peer TEXT,
    source TEXT,
    calling TEXT,
    called TEXT,
    code INTEGER,
    reason TEXT,
    setup REAL,
    ring REAL,
    answer REAL,
    legs INTEGER,
    release TEXT
);
CREATE INDEX IF NOT EXISTS calls_setup ON calls (setup);
CREATE TABLE IF NOT EXISTS legs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT,
    from_tag TEXT,
    to_tag TEXT,
    callid TEXT,
    sip_code TEXT,
    sip_reason TEXT,
    time TEXT,
    ts REAL,
    edge TEXT,
    direction TEXT,
    trunk TEXT,
    peer TEXT,
    calling TEXT,
    called TEXT,
    leg INTEGER,
    release TEXT
);
CREATE INDEX IF NOT EXISTS legs_ts ON legs (ts);
CREATE INDEX IF NOT EXISTS legs_callid ON legs (callid);
CREATE TABLE IF NOT EXISTS version (table_name TEXT PRIMARY KEY, table_version INTEGER);
INSERT OR REPLACE INTO version VALUES ('calls', 1), ('legs', 1);
