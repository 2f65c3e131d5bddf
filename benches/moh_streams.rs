//! Music on hold to N streams through the shared pacer, in process, over
//! loopback: reports the CPU the process spends per 1,000 streams and the p99
//! lateness of the 20 ms ticks.
//!
//!     cargo bench --bench moh_streams -- [streams] [seconds]     (default 1000 10)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hotline::media::g711::Codec;
use hotline::media::pacer::Pacer;
use hotline::media::prompt::PromptLibrary;

/// User + system CPU time of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us quickly.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let quick = std::env::args().all(|a| a != "--bench");
    let streams: usize = args
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50 } else { 1000 });
    let seconds: u64 = args
        .get(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 10 });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let library = PromptLibrary::embedded().expect("embedded prompts");
        let moh = library.get("moh/default").expect("moh/default");
        let pacer = Pacer::start();
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("sink");
        let target = sink.local_addr().expect("sink address");
        // Streams share a few sending sockets (a file descriptor each would hit ulimit).
        let mut sockets = Vec::new();
        for _ in 0..16 {
            sockets.push(Arc::new(
                tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("socket"),
            ));
        }
        let mut handles = Vec::with_capacity(streams);
        for i in 0..streams {
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            std::mem::forget(_rx);
            let mut h = pacer.add_stream(sockets[i % sockets.len()].clone(), Codec::Pcmu, 0, tx);
            h.set_remote(Some(target));
            h.play(vec![moh.clone()], true);
            handles.push(h);
        }
        // Drain the sink so the kernel keeps accepting.
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while sink.recv_from(&mut buf).await.is_ok() {}
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (cpu0, wall0, sent0) = (
            cpu_time(),
            Instant::now(),
            pacer.stats.frames_sent.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
        let sent = pacer.stats.frames_sent.load(Ordering::Relaxed) - sent0;
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        println!(
            "moh_streams: {streams} streams for {:.1} s: {sent} frames ({:.0}/s, expected {}/s), \
             CPU {:.1} % of one core in all ({:.1} % per 1,000 streams, sender and sink together), \
             tick lateness p99 {:?}, max {} us, send failures {}",
            wall.as_secs_f64(),
            sent as f64 / wall.as_secs_f64(),
            streams * 50,
            share * 100.0,
            share * 100.0 * 1000.0 / streams as f64,
            pacer.stats.lateness_quantile(0.99),
            pacer.stats.max_lateness_us.load(Ordering::Relaxed),
            pacer.stats.send_failures.load(Ordering::Relaxed),
        );
        drop(handles);
    });
}
