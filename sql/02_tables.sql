-- lakewriter / ClickHouse 02: database `lake`, the S3 table over the lake, the deduplicating view.
--
-- Literals the test rewrites (see sql/README.md):
--   'clickstream/'  the table directory under the collection's url (<table> = topic name by
--                   default), i.e. the objects read are
--                   <bucket>/<prefix>/clickstream/date=*/event_type=*/*.parquet
-- Uses the named collection `lake_s3` from 01_named_collection.sql.
--
-- Objects created:
--   lake.events_s3  ENGINE = S3, every Parquet file of the table, duplicates included;
--                   `date` and `event_type` come from the object path (Hive partitioning),
--                   `event_type` still Hive-escaped as it appears in the path (a%2Fb).
--   lake.events     one row per Kafka record (_topic, _partition, _offset), `event_type`
--                   unescaped (a/b, '' for __HIVE_DEFAULT_PARTITION__). Query this one.
--
-- Internal state under <prefix>/_lakewriter/ is never matched by the date=* glob.

SET use_hive_partitioning = 1;

CREATE DATABASE IF NOT EXISTS lake;

-- The column list is explicit on purpose:
--  * the files of different event types have different `event_params` structs (the fields after
--    `country`); schema inference would take the struct of whichever file it reads first, and
--    schema_inference_mode = 'union' rejects structs that differ. Declared here is the union;
--    a field a file does not have reads as NULL;
--  * no inference means the table (and the view) can be created while the lake is still empty,
--    e.g. by the compose stack's init script before lakewriter has written anything;
--  * `date` and `event_type` are declared so that they are always there; ClickHouse fills them
--    from the path (date=.../event_type=...), the files do not contain them.
-- A field lakewriter starts writing later (schema widening) is invisible here until it is added
-- to this list (s3() with schema inference, see 03, shows what the files hold).
CREATE OR REPLACE TABLE lake.events_s3
(
    event_params Tuple(
        event_type_id Int64,
        event_type String,
        user_id String,
        platform_token String,
        ipv4 String,
        country String,
        uuid_track Nullable(String),
        uuid_track_prev Nullable(String),
        uuid_track_current Nullable(String),
        uuid_playlist Nullable(String),
        uuid_track_like_status Nullable(String)),
    event_timestamp_ms Tuple(
        ts Int64,
        ts_ms Int64),
    _topic String,
    _partition Int32,
    _offset Int64,
    _timestamp DateTime64(6, 'UTC'),    -- Kafka record time
    _key Nullable(String),              -- Kafka key (bytes), NULL when the record had none
    _event_time DateTime64(6, 'UTC'),   -- event time lakewriter routed on (UTC)
    _ingested_at DateTime64(6, 'UTC'),  -- when lakewriter encoded the row
    date Date,                          -- from the path: date=YYYY-MM-DD
    event_type String                   -- from the path: event_type=<Hive-escaped value>
)
ENGINE = S3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet');

-- One row per Kafka record. lakewriter names objects after their offsets and rolls back
-- uncommitted uploads, so duplicates should not exist; this view makes readers immune to the
-- window the design leaves open (a writer fenced out of its group mid-upload).
--
-- GROUP BY, not LIMIT 1 BY: ClickHouse pushes a WHERE on GROUP BY keys into the S3 read, so
-- `WHERE date = ... AND event_type = ...` on this view still reads only that directory's files
-- (proved by tests/clickhouse/test_sql.py); through LIMIT 1 BY it reads every file.
-- `date` and `event_type` are keys too: a Kafka record always routes to the same partition, so
-- this does not change which rows count as duplicates.
-- Cost: the GROUP BY holds every selected row in memory; filter on date for large lakes.
CREATE OR REPLACE VIEW lake.events AS
SELECT
    date,
    event_type,
    _topic,
    _partition,
    _offset,
    any(event_params) AS event_params,
    any(event_timestamp_ms) AS event_timestamp_ms,
    any(_timestamp) AS _timestamp,
    any(_key) AS _key,
    any(_event_time) AS _event_time,
    min(_ingested_at) AS _ingested_at
FROM
(
    SELECT
        * EXCEPT (event_type),
        -- Undo the Hive escaping lakewriter applied to the value in the path.
        if(event_type = '__HIVE_DEFAULT_PARTITION__', '', decodeURLComponent(event_type)) AS event_type
    FROM lake.events_s3
)
GROUP BY date, event_type, _topic, _partition, _offset;
