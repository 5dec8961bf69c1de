//! Kafka positions: which partition ([`Tp`]), where a backfill range starts
//! or ends ([`Bound`]), and under which group a backfill commits
//! ([`default_group`]).
//!
//! Configuration, the source, the buffers, the commit and the backfill all
//! speak of these; keeping them here, importing no other module of the crate,
//! lets each of those depend on this file instead of on one another.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A Kafka topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tp {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// One end of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Earliest,
    Latest,
    /// Kafka timestamp, ms since the epoch.
    Time(i64),
    /// Explicit `partition:offset` pairs; unlisted partitions use the
    /// partition's start (for `--from`) or end (for `--to`).
    Offsets(BTreeMap<i32, i64>),
}

impl std::str::FromStr for Bound {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "earliest" => return Ok(Bound::Earliest),
            "latest" => return Ok(Bound::Latest),
            _ => {}
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(Bound::Time(t.timestamp_millis()));
        }
        let mut m = BTreeMap::new();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (p, o) = pair.trim().split_once(':').ok_or_else(|| {
                format!(
                    "{s:?}: expected earliest, latest, an RFC 3339 time or partition:offset[,…]"
                )
            })?;
            let p: i32 = p
                .parse()
                .map_err(|_| format!("bad partition in {pair:?}"))?;
            let o: i64 = o.parse().map_err(|_| format!("bad offset in {pair:?}"))?;
            if p < 0 || o < 0 {
                return Err(format!("negative partition or offset in {pair:?}"));
            }
            m.insert(p, o);
        }
        if m.is_empty() {
            return Err(format!("{s:?}: empty range bound"));
        }
        Ok(Bound::Offsets(m))
    }
}

/// A group id unique to a backfill's arguments, so its progress is its own.
pub fn default_group(
    topics: &[String],
    from: &str,
    to: &str,
    partitions: &str,
    table: &str,
    lake: &str,
) -> String {
    // FNV-1a: stable across runs and platforms (unlike std's RandomState hasher).
    let mut h: u64 = 0xcbf29ce484222325;
    for part in [topics.join(",").as_str(), from, to, partitions, table, lake] {
        for b in part.bytes().chain(std::iter::once(0u8)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("lakewriter-backfill-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse() {
        assert_eq!("earliest".parse::<Bound>().unwrap(), Bound::Earliest);
        assert_eq!("latest".parse::<Bound>().unwrap(), Bound::Latest);
        assert_eq!(
            "2024-05-18T00:00:00Z".parse::<Bound>().unwrap(),
            Bound::Time(1_715_990_400_000)
        );
        assert_eq!(
            "0:10, 3:7".parse::<Bound>().unwrap(),
            Bound::Offsets(BTreeMap::from([(0, 10), (3, 7)]))
        );
        assert!("yesterday".parse::<Bound>().is_err());
        assert!("0:-1".parse::<Bound>().is_err());
    }

    #[test]
    fn default_group_depends_on_every_argument() {
        let t = vec!["a".to_string()];
        let g = default_group(&t, "earliest", "latest", "", "a", "s3://b");
        assert_eq!(
            g,
            default_group(&t, "earliest", "latest", "", "a", "s3://b")
        );
        assert_ne!(
            g,
            default_group(&t, "earliest", "latest", "", "a", "s3://c")
        );
        assert_ne!(g, default_group(&t, "earliest", "0:5", "", "a", "s3://b"));
    }
}
