-- lakewriter / ClickHouse 01: the lake's S3 location and credentials as a named collection.
--
-- Every other file reaches the lake through `lake_s3`, so this is the only file that holds the
-- endpoint and the keys. As shipped it carries the compose stack's default values: the test
-- (tests/clickhouse/test_sql.py) rewrites all three literals below before running the file, and
-- the compose stack's ClickHouse init script (deploy/clickhouse/initdb/lake-sql.sh) replaces the
-- two keys with the MinIO keys from its environment:
--
--   url               'http://minio:9000/lake/events/'  = <S3 endpoint>/<bucket>/<prefix>/
--                                                          (path-style; must end with '/')
--   access_key_id     'minioadmin'
--   secret_access_key 'minioadmin'
--
-- Needs a user with `named_collection_control` (see sql/README.md). In production, prefer a
-- named collection from a server config file or a secret-mounted users.d/ file over keys in SQL.
-- IF NOT EXISTS keeps an existing collection: change one with ALTER NAMED COLLECTION lake_s3 SET ...

CREATE NAMED COLLECTION IF NOT EXISTS lake_s3 AS
    url = 'http://minio:9000/lake/events/',
    access_key_id = 'minioadmin',
    secret_access_key = 'minioadmin';
