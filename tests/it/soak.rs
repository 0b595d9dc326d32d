//! A soak of the release-shaped binary (SPEC §9): 10,000 idle connections and 100 slow-header
//! connections at once, with normal traffic beside them. Asserted in counts: every normal
//! request is answered, every bad connection is closed by Tollgate, and the process's peak
//! memory stays within a bound. Tollgate runs as its own process, so its memory is its own.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const IDLE: usize = 10_000;
const SLOW: usize = 100;
const NORMAL: usize = 2_000;
/// Peak resident memory allowed above the idle process's, for all of the above: about 8 KB
/// per open connection (about 3 KB measured).
const MEMORY_BOUND_KB: u64 = 80 * 1024;

/// Raises this process's open-file limit to its hard limit (children inherit it): each side
/// of 10,000 loopback connections needs 10,000 descriptors, and Tollgate runs as its own
/// process.
fn raise_file_limit() {
    let output = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let enough = hard == "unlimited"
        || hard
            .parse::<usize>()
            .is_ok_and(|hard| hard > IDLE + SLOW + 1_000);
    assert!(
        enough,
        "the open-file hard limit ({hard}) is too low for the soak"
    );
    let limit = if hard == "unlimited" {
        "65536".to_owned()
    } else {
        hard
    };
    let status = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(
        status.success(),
        "cannot raise the open-file limit to {limit}"
    );
}

fn kilobytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Waits until the server closes `stream`; `true` when it did within the outer bound.
async fn closed_by_server(mut stream: tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    let until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), until_closed)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_while_normal_traffic_is_served() {
    raise_file_limit();
    let dir = crate::support::scratch_dir("soak");
    let config = dir.join("soak.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         header_read_timeout = \"8s\"\nkeepalive_timeout = \"8s\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOLLGATE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let address: std::net::SocketAddr = loop {
        let line = lines.next().expect("tollgate printed its address").unwrap();
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(address) = event["public_addr"].as_str()
        {
            break address.parse().unwrap();
        }
    };
    // The log is read to its end, as a service manager would.
    std::thread::spawn(move || lines.for_each(drop));
    let baseline = kilobytes(pid, "VmRSS:");

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
        slow.push(tokio::spawn(async move {
            // One header byte every 500 ms: the head never completes.
            let mut closed = false;
            for _ in 0..400 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if stream.write_all(b"a").await.is_err() {
                    closed = true;
                    break;
                }
            }
            closed || closed_by_server(stream).await
        }));
    }

    // Normal traffic while all of them are open.
    let client = reqwest::Client::new();
    let mut answered = 0;
    for _ in 0..NORMAL {
        let response = client
            .get(format!("http://{address}/ping"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 && response.text().await.unwrap() == "OK" {
            answered += 1;
        }
    }
    assert_eq!(answered, NORMAL, "every normal request is answered");

    let closed_idle = futures_join(idle.into_iter().map(closed_by_server)).await;
    let mut closed_slow = 0;
    for task in slow {
        closed_slow += usize::from(task.await.unwrap());
    }
    assert_eq!(closed_idle, IDLE, "idle connections closed by Tollgate");
    assert_eq!(
        closed_slow, SLOW,
        "slow-header connections closed by Tollgate"
    );

    let peak = kilobytes(pid, "VmHWM:");
    eprintln!(
        "soak: baseline {baseline} KB, peak {peak} KB, {} KB per bad connection",
        (peak - baseline) / (IDLE + SLOW) as u64
    );
    assert!(
        peak.saturating_sub(baseline) <= MEMORY_BOUND_KB,
        "peak {peak} KB, baseline {baseline} KB: more than {MEMORY_BOUND_KB} KB for {IDLE} idle connections"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the futures concurrently and counts those that answered `true`.
async fn futures_join(
    futures: impl Iterator<Item = impl Future<Output = bool> + Send + 'static>,
) -> usize {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut count = 0;
    for handle in handles {
        count += usize::from(handle.await.unwrap());
    }
    count
}
