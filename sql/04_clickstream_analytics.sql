-- lakewriter / ClickHouse 04: clickstream analytics over the deduplicated view lake.events.
--
-- No literals to rewrite: everything goes through lake.events (02_tables.sql).
-- `event_type` here is the unescaped value; filters on `date` and `event_type` prune the files
-- read even through the view.
--
-- Lines `-- @check: ...` mark queries whose results the test compares with what was produced.

-- Events and distinct users per event type per day.
-- @check: by_partition
SELECT
    date,
    event_type,
    count() AS events,
    uniqExact(event_params.user_id) AS users
FROM lake.events
GROUP BY date, event_type
ORDER BY date, event_type;

-- Top countries by events, with users and the share of plays.
SELECT
    event_params.country AS country,
    count() AS events,
    uniqExact(event_params.user_id) AS users,
    round(countIf(event_type = 'track_playback') / count(), 3) AS playback_share
FROM lake.events
GROUP BY country
ORDER BY events DESC, country
LIMIT 10;

-- Playback -> like funnel per user, within one hour, in event-time order
-- (windowFunnel wants an unsigned number or DateTime, hence milliseconds as UInt64).
-- level 0: no playback, 1: played, 2: liked within an hour after a playback.
SELECT
    level,
    count() AS users
FROM
(
    SELECT
        event_params.user_id AS user_id,
        windowFunnel(3600000)(
            toUInt64(toUnixTimestamp64Milli(_event_time)),
            event_type = 'track_playback',
            event_type = 'track_like') AS level
    FROM lake.events
    WHERE event_type IN ('track_playback', 'track_like')
    GROUP BY user_id
)
GROUP BY level
ORDER BY level;

-- The same funnel per day with plain conditional counts: users who played, who liked, and who
-- liked after their first playback of the day.
SELECT
    date,
    countIf(plays > 0) AS users_played,
    countIf(likes > 0) AS users_liked,
    countIf(plays > 0 AND last_like > first_play) AS users_liked_after_play,
    round(users_liked_after_play / users_played, 3) AS conversion
FROM
(
    SELECT
        date,
        event_params.user_id AS user_id,
        countIf(event_type = 'track_playback') AS plays,
        countIf(event_type = 'track_like') AS likes,
        minIf(_event_time, event_type = 'track_playback') AS first_play,
        maxIf(_event_time, event_type = 'track_like') AS last_like
    FROM lake.events
    WHERE event_type IN ('track_playback', 'track_like')
    GROUP BY date, user_id
)
GROUP BY date
ORDER BY date;

-- Skips per playback, per day and platform.
SELECT
    date,
    event_params.platform_token AS platform,
    countIf(event_type = 'track_playback') AS plays,
    countIf(event_type IN ('skipping_track_next', 'skipping_track_prev')) AS skips,
    round(skips / nullIf(plays, 0), 3) AS skips_per_play
FROM lake.events
GROUP BY date, platform
ORDER BY date, platform;

-- Most liked tracks (likes minus unlikes).
SELECT
    event_params.uuid_track_like_status AS track,
    countIf(event_type = 'track_like') - countIf(event_type = 'track_unlike') AS net_likes
FROM lake.events
WHERE event_type IN ('track_like', 'track_unlike')
GROUP BY track
ORDER BY net_likes DESC, track
LIMIT 10;
