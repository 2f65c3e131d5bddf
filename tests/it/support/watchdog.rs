//! A time bound on every test: a test that has held a server or waited on a
//! tool for longer than [`TEST_LIMIT`] is named on stderr, with the processes
//! it left running, and the test process ends with a failure. One test that
//! hangs then fails the suite in minutes, by name, instead of stalling it.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Far beyond the longest test (about a minute), short enough to leave the
/// suite its time.
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

fn watched() -> &'static Mutex<HashMap<u64, (String, Instant)>> {
    static WATCHED: OnceLock<Mutex<HashMap<u64, (String, Instant)>>> = OnceLock::new();
    WATCHED.get_or_init(|| {
        std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(patrol)
            .expect("the test watchdog thread");
        Mutex::new(HashMap::new())
    })
}

/// Watches the calling test (by its thread's name) while this lives.
pub struct Watch(u64);

pub fn watch(what: &str) -> Watch {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let test = std::thread::current()
        .name()
        .unwrap_or("an unnamed thread")
        .to_string();
    if let Ok(mut w) = watched().lock() {
        w.insert(id, (format!("{test} ({what})"), Instant::now()));
    }
    Watch(id)
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut w) = watched().lock() {
            w.remove(&self.0);
        }
    }
}

fn patrol() {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let overdue: Vec<(String, Duration)> = match watched().lock() {
            Ok(w) => w
                .values()
                .filter(|(_, since)| since.elapsed() > TEST_LIMIT)
                .map(|(name, since)| (name.clone(), since.elapsed()))
                .collect(),
            Err(_) => continue,
        };
        if overdue.is_empty() {
            continue;
        }
        for (name, running) in &overdue {
            eprintln!("test watchdog: {name} still running after {running:?}");
        }
        let children = Command::new("ps")
            .args([
                "-o",
                "pid,etime,args",
                "--ppid",
                &std::process::id().to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("test watchdog: processes of this test run:\n{children}");
        eprintln!("test watchdog: ending the test process");
        std::process::exit(101);
    }
}
