//! Fault injection for the recovery tests: `LAKEWRITER_FAULT=<point>:<cycle>`
//! aborts the process (like a SIGKILL: no flush, no destructors) at that
//! point of that flush cycle. Points: `after_records`, `mid_upload`,
//! `after_upload`, `after_commit`. Unset in production: one env read, once.

use std::sync::LazyLock;

static SPEC: LazyLock<Option<(String, u64)>> = LazyLock::new(|| {
    let v = std::env::var("LAKEWRITER_FAULT").ok()?;
    let (p, n) = v.split_once(':')?;
    Some((p.to_string(), n.parse().ok()?))
});

pub fn point(name: &str, cycle: u64) {
    if let Some((p, n)) = SPEC.as_ref() {
        if p == name && *n == cycle {
            eprintln!("lakewriter: injected fault {name} in flush cycle {cycle}: aborting");
            std::process::abort();
        }
    }
}
