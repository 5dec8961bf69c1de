-- lakewriter / ClickHouse 03: reading the lake straight with the s3() table function.
--
-- Literals the test rewrites (see sql/README.md):
--   'clickstream/'  the table directory under the named collection's url.
-- Uses the named collection `lake_s3` from 01_named_collection.sql (endpoint and keys).
--
-- With use_hive_partitioning = 1 the path segments date=YYYY-MM-DD and event_type=<value>
-- become columns `date` and `event_type` (Hive-escaped as in the path: a%2Fb, 50%25,
-- __HIVE_DEFAULT_PARTITION__ for ''). A WHERE on them is applied to the object list before any file is opened: only the
-- matching directories' files are read (the test proves it with system.events counters).
--
-- Every query passes `structure` with just the columns it reads, plus `date Date, event_type
-- String`: ClickHouse then needs no schema inference, which would fail on an empty lake
-- (CANNOT_EXTRACT_TABLE_STRUCTURE) and would see only the event_params fields of the first file
-- it opens. Parquet columns are matched by name, nested struct fields too. The two partition
-- columns are declared because ClickHouse otherwise derives them from the first object's path,
-- so with no object at all `date` is an unknown identifier; declared, they are still filled
-- from each object's path (the files do not contain them) and still prune. Declare both even
-- where a query uses one: ClickHouse 25.8 rejects a structure that lists some but not all of
-- the path's partition columns ("All hive partitioning columns must be present in the schema").
--
-- Lines `-- @check: ...` mark queries whose results the test compares with what was produced.

SET use_hive_partitioning = 1;

-- Rows per date and event type, every file counted (no deduplication).
-- @check: by_partition
SELECT
    date,
    if(event_type = '__HIVE_DEFAULT_PARTITION__', '', decodeURLComponent(event_type)) AS event_type_value,
    count() AS rows
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = '_offset Int64, date Date, event_type String')
GROUP BY date, event_type_value
ORDER BY date, event_type_value;

-- All rows of the table.
-- @check: total
SELECT count() AS rows
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = '_offset Int64, date Date, event_type String');

-- Records stored more than once (expected 0: lakewriter's object names and recovery records
-- prevent duplicates; lake.events hides any that slip through).
-- @check: zero
SELECT count() - uniqExact(_topic, _partition, _offset) AS duplicates
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = '_topic String, _partition Int32, _offset Int64, date Date, event_type String');

-- Last 7 days of one event type: the WHERE on the partition columns prunes the files read.
SELECT date, count() AS plays, uniqExact(event_params.user_id) AS users
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = 'event_params Tuple(user_id String), date Date, event_type String')
WHERE date >= today() - 7 AND event_type = 'track_playback'
GROUP BY date
ORDER BY date;

-- The same kind of filter written into the path: ClickHouse then also LISTs only that
-- directory (a glob over date=* LISTs every object of the table, 1,000 keys per request).
SELECT event_type, count() AS rows
FROM s3(lake_s3, filename = 'clickstream/date=2024-05-18/event_type=*/*.parquet', format = 'Parquet',
        structure = '_offset Int64, date Date, event_type String')
GROUP BY event_type
ORDER BY event_type;

-- Type-specific nested fields: a file without the field gives NULL.
SELECT
    event_type,
    countIf(event_params.uuid_track IS NOT NULL) AS with_uuid_track,
    countIf(event_params.uuid_track_prev IS NOT NULL) AS with_uuid_track_prev,
    countIf(event_params.uuid_playlist IS NOT NULL) AS with_uuid_playlist,
    countIf(event_params.uuid_track_like_status IS NOT NULL) AS with_like_status
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = 'event_params Tuple(uuid_track Nullable(String), uuid_track_prev Nullable(String),
                                        uuid_playlist Nullable(String), uuid_track_like_status Nullable(String)),
                     date Date, event_type String')
GROUP BY event_type
ORDER BY event_type;

-- Files, rows and bytes per directory (`_path` and `_size` are virtual columns): spots small files.
SELECT
    date,
    event_type,
    count() AS files,
    sum(file_rows) AS rows,
    round(sum(file_rows) / count()) AS rows_per_file,
    formatReadableSize(sum(file_bytes)) AS size
FROM
(
    SELECT date, event_type, _path, count() AS file_rows, any(_size) AS file_bytes
    FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
            structure = '_offset Int64, date Date, event_type String')
    GROUP BY date, event_type, _path
)
GROUP BY date, event_type
ORDER BY date, event_type;

-- Kafka coverage per partition: offsets stored, and how many between the first and the last are
-- not in the lake (dead-lettered records, or records not flushed yet).
SELECT
    _topic,
    _partition,
    min(_offset) AS first_offset,
    max(_offset) AS last_offset,
    uniqExact(_offset) AS offsets_stored,
    max(_offset) - min(_offset) + 1 - uniqExact(_offset) AS offsets_missing
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = '_topic String, _partition Int32, _offset Int64, date Date, event_type String')
GROUP BY _topic, _partition
ORDER BY _topic, _partition;

-- Freshness: newest event time and ingest time, and how far ingestion lags behind the events.
SELECT
    max(_event_time) AS newest_event,
    max(_ingested_at) AS newest_ingest,
    quantileExact(0.5)(dateDiff('millisecond', _event_time, _ingested_at)) AS median_lag_ms,
    quantileExact(0.99)(dateDiff('millisecond', _event_time, _ingested_at)) AS p99_lag_ms
FROM s3(lake_s3, filename = 'clickstream/date=*/event_type=*/*.parquet', format = 'Parquet',
        structure = '_event_time DateTime64(6, \'UTC\'), _ingested_at DateTime64(6, \'UTC\'),
                     date Date, event_type String')
WHERE date >= today() - 1;
