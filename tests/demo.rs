//! `lakewriter demo` needs nothing installed: run the real binary.

use std::process::Command;

#[test]
fn demo_exits_zero_and_its_lake_holds_every_good_event() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = Command::new(env!("CARGO_BIN_EXE_lakewriter"))
        .args(["demo", "--events", "100000", "--lake"])
        .arg(&lake)
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Count rows from the files themselves.
    let mut rows = 0usize;
    let mut files = 0usize;
    let mut stack = vec![lake.join("clickstream")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("parquet"),
                    "{}",
                    p.display()
                );
                let f = std::fs::File::open(&p).unwrap();
                let r = parquet::file::reader::SerializedFileReader::new(f).unwrap();
                rows += parquet::file::reader::FileReader::metadata(&r)
                    .file_metadata()
                    .num_rows() as usize;
                files += 1;
            }
        }
    }
    let produced_line = stdout
        .lines()
        .find(|l| l.starts_with("produced "))
        .expect("produced line");
    // "produced N events (M malformed) ..."
    let nums: Vec<usize> = produced_line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(rows, nums[0] - nums[1], "{stdout}");
    assert!(files >= 8, "{files} files");
}
