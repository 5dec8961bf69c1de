//! Fault injection for the recovery tests: `LAKEWRITER_FAULT=<point>:<cycle>`
//! aborts the process (like a SIGKILL: no flush, no destructors) at that
//! point of that flush cycle; `<point>:<cycle>:stop` instead stops it with
//! SIGSTOP (like a long pause) until the test sends SIGCONT; `<point>:<cycle>:hold`
//! holds only the flushing thread (librdkafka's threads keep the member in its
//! group, as during a slow upload) until the file `LAKEWRITER_FAULT_RELEASE`
//! names exists. Points:
//! `after_records`, `mid_upload`, `after_upload`, `after_commit`. Unset in
//! production: one env read, once.

use std::sync::LazyLock;

struct Spec {
    point: String,
    cycle: u64,
    mode: Option<String>,
}

static SPEC: LazyLock<Option<Spec>> = LazyLock::new(|| {
    let v = std::env::var("LAKEWRITER_FAULT").ok()?;
    let mut it = v.split(':');
    Some(Spec {
        point: it.next()?.to_string(),
        cycle: it.next()?.parse().ok()?,
        mode: it.next().map(str::to_string),
    })
});

pub fn point(name: &str, cycle: u64) {
    let Some(s) = SPEC.as_ref() else { return };
    if s.point != name || s.cycle != cycle {
        return;
    }
    if s.mode.as_deref() == Some("hold") {
        eprintln!("lakewriter: injected fault {name} in flush cycle {cycle}: holding");
        let release = std::env::var_os("LAKEWRITER_FAULT_RELEASE").unwrap_or_default();
        while !std::path::Path::new(&release).exists() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("lakewriter: released from the injected hold");
    } else if s.mode.as_deref() == Some("stop") {
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
