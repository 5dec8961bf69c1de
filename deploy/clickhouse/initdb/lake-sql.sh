#!/bin/bash
# ClickHouse init script of the compose stack (mounted as
# /docker-entrypoint-initdb.d/; the image's entrypoint runs it once, on the first
# start with an empty data volume, while the server listens on 127.0.0.1 only).
#
# Runs sql/[0-9][0-9]_*.sql (mounted at $LAKE_SQL_DIR) in file-name order, with
# the lake's keys from the environment (LAKE_S3_ACCESS_KEY_ID,
# LAKE_S3_SECRET_ACCESS_KEY, set from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD)
# in place of the compose-default literals sql/01_named_collection.sql ships
# (access_key_id = 'minioadmin', secret_access_key = 'minioadmin'), so that a
# changed MinIO password reaches the named collection lake_s3. The values are
# escaped as ClickHouse string literals. It fails if a literal is missing from
# sql/, rather than create the collection with keys nobody chose.
#
# Works whether the entrypoint executes it or sources it (a checkout without
# the executable bit): everything runs in a subshell.
(
    set -euo pipefail
    shopt -u patsub_replacement 2>/dev/null || true

    sql_dir=${LAKE_SQL_DIR:-/lake-sql}
    : "${LAKE_S3_ACCESS_KEY_ID:?LAKE_S3_ACCESS_KEY_ID is not set (docker-compose.yml sets it)}"
    : "${LAKE_S3_SECRET_ACCESS_KEY:?LAKE_S3_SECRET_ACCESS_KEY is not set (docker-compose.yml sets it)}"

    shipped_key="access_key_id = 'minioadmin'"
    shipped_secret="secret_access_key = 'minioadmin'"

    # A ClickHouse string literal: backslashes and single quotes escaped.
    sql_string() {
        local v=${1//\\/\\\\}
        v=${v//\'/\\\'}
        printf "'%s'" "$v"
    }
    key="access_key_id = $(sql_string "$LAKE_S3_ACCESS_KEY_ID")"
    secret="secret_access_key = $(sql_string "$LAKE_S3_SECRET_ACCESS_KEY")"

    files=()
    for f in "$sql_dir"/[0-9][0-9]_*.sql; do
        [ -f "$f" ] && files+=("$f")
    done
    if [ "${#files[@]}" -eq 0 ]; then
        echo "lake-sql: no [0-9][0-9]_*.sql files in $sql_dir" >&2
        exit 1
    fi

    found_key=0 found_secret=0
    for f in "${files[@]}"; do
        text=$(<"$f")
        if [[ $text == *"$shipped_key"* ]]; then found_key=1; fi
        if [[ $text == *"$shipped_secret"* ]]; then found_secret=1; fi
    done
    if [ "$found_key" -ne 1 ] || [ "$found_secret" -ne 1 ]; then
        echo "lake-sql: $sql_dir no longer contains $shipped_key and $shipped_secret;" \
             "update deploy/clickhouse/initdb/lake-sql.sh with sql/01_named_collection.sql" >&2
        exit 1
    fi

    for f in "${files[@]}"; do
        text=$(<"$f")
        text=${text//"$shipped_key"/"$key"}
        text=${text//"$shipped_secret"/"$secret"}
        echo "lake-sql: running $f"
        printf '%s\n' "$text" | clickhouse-client --multiquery --host 127.0.0.1 \
            --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}"
    done
)
