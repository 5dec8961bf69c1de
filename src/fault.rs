//! Fault injection for the recovery tests: `LAKEWRITER_FAULT=<point>:<cycle>`
//! aborts the process (like a SIGKILL: no flush, no destructors) at that
//! point of that flush cycle; `<point>:<cycle>:stop` instead stops it with
//! SIGSTOP (like a long pause) until the test sends SIGCONT. Points:
//! `after_records`, `mid_upload`, `after_upload`, `after_commit`. Unset in
//! production: one env read, once.

use std::sync::LazyLock;

struct Spec {
    point: String,
    cycle: u64,
    stop: bool,
}

static SPEC: LazyLock<Option<Spec>> = LazyLock::new(|| {
    let v = std::env::var("LAKEWRITER_FAULT").ok()?;
    let mut it = v.split(':');
    Some(Spec {
        point: it.next()?.to_string(),
        cycle: it.next()?.parse().ok()?,
        stop: it.next() == Some("stop"),
    })
});

pub fn point(name: &str, cycle: u64) {
    let Some(s) = SPEC.as_ref() else { return };
    if s.point != name || s.cycle != cycle {
        return;
    }
    if s.stop {
        eprintln!("lakewriter: injected fault {name} in flush cycle {cycle}: stopping (SIGSTOP)");
        let pid = std::process::id().to_string();
        // `kill` rather than a libc binding: test-only, and it returns once we are continued.
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status();
        eprintln!("lakewriter: continued after the injected stop");
    } else {
        eprintln!("lakewriter: injected fault {name} in flush cycle {cycle}: aborting");
        std::process::abort();
    }
}
