//! Real Redis servers for the tests, started from Debian's `redis-server` on loopback:
//! standalone (with an append-only file, so a restart keeps its data), a 3-node Cluster, and a
//! master watched by a Sentinel. Outside CI a missing `redis-server` skips the test with a
//! message; under `CI=true` it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::free_port;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Whether Redis tests can run; panics under CI when they cannot.
pub fn available() -> bool {
    let present =
        std::path::Path::new(REDIS_SERVER).exists() && std::path::Path::new(REDIS_CLI).exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is missing: scripts/test.sh installs it"
        );
        eprintln!("skipping: redis-server is not installed (scripts/test.sh installs it)");
    }
    present
}

fn temp_dir(name: &str) -> PathBuf {
    super::scratch_dir(&format!("redis-{name}"))
}

pub async fn wait_until(mut ready: impl FnMut() -> bool, what: &str) {
    // Up to 30 s: a cluster can take a while to agree on a loaded CI machine.
    for _ in 0..600 {
        if ready() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} never became ready");
}

fn cli(port: u16, args: &[&str]) -> String {
    cli_as(port, None, args)
}

/// `redis-cli`, logged in with `password` when given (`REDISCLI_AUTH`, so it is never on a
/// command line).
fn cli_as(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(REDIS_CLI);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    let output = command.output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// The `requirepass` it was started with, for `cli`.
    password: Option<String>,
    /// The CA of its certificate, when it speaks only TLS, for `cli`.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    async fn spawn(port: u16, dir: PathBuf, extra: Vec<String>) -> Self {
        let password = extra
            .iter()
            .position(|arg| arg == "--requirepass")
            .and_then(|index| extra.get(index + 1))
            .cloned();
        let mut server = Self {
            port,
            dir,
            extra,
            child: None,
            password,
            tls_ca: None,
        };
        server.start().await;
        server
    }

    /// A standalone server that writes every change to its append-only file.
    pub async fn standalone() -> Self {
        let extra = ["--appendonly", "yes", "--appendfsync", "always"]
            .map(str::to_owned)
            .to_vec();
        Self::spawn(free_port(), temp_dir("standalone"), extra).await
    }

    /// A standalone server started with these extra arguments (ACL users, say).
    pub async fn with_args(args: &[&str]) -> Self {
        let extra = args.iter().map(|arg| (*arg).to_owned()).collect();
        Self::spawn(free_port(), temp_dir("custom"), extra).await
    }

    /// A server that speaks only TLS (certificate from a fresh test CA) and wants `password`.
    /// Returns it and the CA's PEM file.
    pub async fn tls_with_password(password: &str) -> (Self, PathBuf) {
        let dir = temp_dir("tls");
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=Redis Test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let port = free_port();
        let file = |name: &str| dir.join(name).display().to_string();
        let extra = vec![
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file("server.pem"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
            "--requirepass".to_owned(),
            password.to_owned(),
        ];
        let child = Command::new(REDIS_SERVER)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ca = dir.join("ca.pem");
        let ca_text = ca.display().to_string();
        let password = password.to_owned();
        wait_until(
            || {
                Command::new(REDIS_CLI)
                    .args([
                        "--tls",
                        "--cacert",
                        &ca_text,
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-a",
                        &password,
                        "--no-auth-warning",
                        "ping",
                    ])
                    .output()
                    .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "PONG")
            },
            "redis-server with TLS",
        )
        .await;
        (
            Self {
                port,
                dir,
                extra: Vec::new(),
                child: Some(child),
                password: Some(password),
                tls_ca: Some(ca.clone()),
            },
            ca,
        )
    }

    /// A replica of `master`, once it has the master's data and the master counts it.
    pub async fn replica_of(master: &RedisServer) -> Self {
        Self::replica_of_through(master, master.port).await
    }

    /// A replica of `master` that reaches it at `port` (a relay in between), once it has the
    /// master's data and the master counts it.
    pub async fn replica_of_through(master: &RedisServer, port: u16) -> Self {
        let master_port = port.to_string();
        let replica = Self::with_args(&["--replicaof", "127.0.0.1", &master_port]).await;
        wait_until(
            || {
                replica
                    .cli(&["info", "replication"])
                    .contains("master_link_status:up")
                    && master
                        .cli(&["info", "replication"])
                        .contains("connected_slaves:1")
            },
            "the replica",
        )
        .await;
        replica
    }

    /// Stops the process (SIGSTOP) without closing its connections: a replica that stays
    /// connected but acknowledges nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().unwrap();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts (again) on the same port and directory.
    pub async fn start(&mut self) {
        let mut args = vec![
            "--port".to_owned(),
            self.port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--dir".to_owned(),
            self.dir.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let child = Command::new(REDIS_SERVER)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        let password = self.password.clone();
        wait_until(
            || cli_as(port, password.as_deref(), &["ping"]).trim() == "PONG",
            "redis-server",
        )
        .await;
    }

    /// Kills the process (SIGKILL: no chance to save anything more).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        match &self.tls_ca {
            Some(ca) => {
                let ca = ca.display().to_string();
                let tls = ["--tls", "--cacert", ca.as_str()];
                cli_as(self.port, self.password.as_deref(), &[&tls, args].concat())
            }
            None => cli_as(self.port, self.password.as_deref(), args),
        }
    }

    /// How many times the server ran `command` (from `INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["info", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three cluster nodes with all slots assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        Self::start_with_replicas(0).await
    }

    /// Three masters with `replicas` replicas each (the first three `nodes` are the masters).
    pub async fn start_with_replicas(replicas: usize) -> Self {
        let mut nodes = Vec::new();
        for index in 0..3 * (1 + replicas) {
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                // A failed shard stops only its own slots, as operators run it for availability.
                "--cluster-require-full-coverage",
                "no",
                "--appendonly",
                "no",
            ]
            .map(str::to_owned)
            .to_vec();
            nodes.push(
                RedisServer::spawn(free_port(), temp_dir(&format!("cluster-{index}")), extra).await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        let replicas = replicas.to_string();
        args.extend(["--cluster-replicas", replicas.as_str(), "--cluster-yes"]);
        let output = Command::new(REDIS_CLI).args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
        wait_until(
            || {
                ports
                    .iter()
                    .all(|port| cli(*port, &["cluster", "info"]).contains("cluster_state:ok"))
            },
            "the cluster",
        )
        .await;
        let cluster = Self { nodes };
        let expected = cluster.nodes.len() - 3;
        wait_until(
            || cluster.synced_replicas() == expected,
            "the cluster's replicas",
        )
        .await;
        cluster
    }

    /// One master holding every slot that tells clients to reach it at `announced` (a port
    /// something else listens on: a proxy in front of it).
    pub async fn single_node_announcing(announced: u16) -> RedisServer {
        let announced = announced.to_string();
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-announce-ip",
            "127.0.0.1",
            "--cluster-announce-port",
            announced.as_str(),
            "--appendonly",
            "no",
        ]
        .map(str::to_owned)
        .to_vec();
        let node = RedisServer::spawn(free_port(), temp_dir("cluster-single"), extra).await;
        let added = node.cli(&["cluster", "addslotsrange", "0", "16383"]);
        assert!(added.contains("OK"), "cluster addslotsrange: {added}");
        wait_until(
            || node.cli(&["cluster", "info"]).contains("cluster_state:ok"),
            "the one-node cluster",
        )
        .await;
        node
    }

    /// How many replicas are connected to their masters with the sync done.
    pub fn synced_replicas(&self) -> usize {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .filter(|node| {
                let info = node.cli(&["info", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            })
            .count()
    }

    /// Whether every replica has all its master wrote (by replication offset).
    pub fn replicas_caught_up(&self) -> bool {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .all(|node| {
                let info = node.cli(&["info", "replication"]);
                if !info.contains("role:master") {
                    return true;
                }
                let field = |name: &str| {
                    info.lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim().to_owned())
                };
                let offset = field("master_repl_offset:");
                let replica_offset = field("slave0:").and_then(|line| {
                    line.split(',')
                        .find_map(|part| part.strip_prefix("offset="))
                        .map(str::to_owned)
                });
                field("connected_slaves:").as_deref() == Some("0") || offset == replica_offset
            })
    }

    /// `CLUSTER NODES` as node indexes: each node's `(index, id, flags, its master's id,
    /// slot ranges)`.
    fn listing(&self) -> Vec<(usize, String, String, String, Vec<String>)> {
        self.nodes[0]
            .cli(&["cluster", "nodes"])
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|port| port.parse().ok())
                    .unwrap();
                let index = self
                    .nodes
                    .iter()
                    .position(|node| node.port == port)
                    .unwrap();
                let slots = fields[8..]
                    .iter()
                    .map(|range| (*range).to_owned())
                    .collect();
                (
                    index,
                    fields[0].to_owned(),
                    fields[2].to_owned(),
                    fields[3].to_owned(),
                    slots,
                )
            })
            .collect()
    }

    /// The master that serves `slot`, as an index into `nodes`.
    pub fn master_of(&self, slot: u16) -> usize {
        let serves = |range: &String| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            match (low.parse::<u16>(), high.parse::<u16>()) {
                (Ok(low), Ok(high)) => (low..=high).contains(&slot),
                _ => false,
            }
        };
        self.listing()
            .into_iter()
            .find(|(_, _, flags, _, slots)| flags.contains("master") && slots.iter().any(serves))
            .unwrap()
            .0
    }

    /// The replica of master `index`, as an index into `nodes`.
    pub fn replica_of(&self, index: usize) -> usize {
        let id = self.node_id(index);
        self.listing()
            .into_iter()
            .find(|(_, _, flags, master, _)| flags.contains("slave") && *master == id)
            .unwrap()
            .0
    }

    /// The node id of node `index`.
    pub fn node_id(&self, index: usize) -> String {
        self.nodes[index]
            .cli(&["cluster", "myid"])
            .trim()
            .to_owned()
    }

    /// Kills master `index` (one of the first three nodes).
    pub fn kill_master(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Whether every live node says the cluster is whole.
    pub fn is_ok(&self) -> bool {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .all(|node| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))
    }

    /// The TOML list for `session.redis_url`.
    pub fn urls_toml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("\"{}\"", node.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}

/// A master and a Sentinel watching it as `mymaster`.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub sentinel: RedisServer,
    /// A replica of the master, when started with one.
    pub replica: Option<RedisServer>,
}

impl RedisSentinel {
    pub async fn start() -> Self {
        Self::start_with(None, false).await
    }

    /// A master that wants `password` (when given) and a sentinel that knows it; with
    /// `sentinel_too`, the sentinel wants the same password from its clients.
    pub async fn start_with(password: Option<&str>, sentinel_too: bool) -> Self {
        let master = match password {
            None => RedisServer::standalone().await,
            Some(password) => {
                RedisServer::with_args(&["--requirepass", password, "--masterauth", password]).await
            }
        };
        Self::watching(master, password, sentinel_too).await
    }

    /// A sentinel watching `master` as `mymaster`.
    async fn watching(master: RedisServer, password: Option<&str>, sentinel_too: bool) -> Self {
        let dir = temp_dir("sentinel");
        let port = free_port();
        let config = dir.join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 2000\n",
            master.port
        );
        if let Some(password) = password {
            text.push_str(&format!("sentinel auth-pass mymaster {password}\n"));
            if sentinel_too {
                text.push_str(&format!("requirepass {password}\n"));
            }
        }
        std::fs::write(&config, text).unwrap();
        let extra = vec![config.display().to_string(), "--sentinel".to_owned()];
        // The config file must come first for redis-server; spawn by hand.
        let child = Command::new(REDIS_SERVER)
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sentinel_password = password.filter(|_| sentinel_too).map(str::to_owned);
        let sentinel = RedisServer {
            port,
            dir,
            extra: Vec::new(),
            child: Some(child),
            password: sentinel_password.clone(),
            tls_ca: None,
        };
        wait_until(
            || {
                cli_as(
                    port,
                    sentinel_password.as_deref(),
                    &["sentinel", "get-master-addr-by-name", "mymaster"],
                )
                .contains("127.0.0.1")
            },
            "the sentinel",
        )
        .await;
        Self {
            master,
            sentinel,
            replica: None,
        }
    }

    /// A master that speaks only TLS and wants `password` ([`RedisServer::tls_with_password`]),
    /// and a sentinel that speaks only TLS (with the master's certificate) and watches the
    /// master over TLS. Returns them and the CA's PEM file.
    pub async fn tls_with_password(password: &str) -> (Self, PathBuf) {
        let (master, ca) = RedisServer::tls_with_password(password).await;
        let dir = temp_dir("sentinel-tls");
        let port = free_port();
        let file = |name: &str| master.dir.join(name).display().to_string();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 2000\n\
                 sentinel auth-pass mymaster {password}\n",
                file("server.pem"),
                file("server.key"),
                file("ca.pem"),
                master.port
            ),
        )
        .unwrap();
        let child = Command::new(REDIS_SERVER)
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sentinel = RedisServer {
            port,
            dir,
            extra: Vec::new(),
            child: Some(child),
            password: None,
            tls_ca: Some(ca.clone()),
        };
        wait_until(
            || {
                sentinel
                    .cli(&["sentinel", "get-master-addr-by-name", "mymaster"])
                    .contains("127.0.0.1")
            },
            "the sentinel over TLS",
        )
        .await;
        (
            Self {
                master,
                sentinel,
                replica: None,
            },
            ca,
        )
    }

    /// A master, a replica of it, and a sentinel that knows both (so it can fail over). The
    /// master cannot be demoted (`REPLICAOF` is disabled on it), as when a partition keeps
    /// the sentinels from reaching it: after a failover it stays a master that takes writes.
    pub async fn start_with_replica() -> Self {
        Self::start_with_replica_from(|port| async move { port }).await
    }

    /// As [`Self::start_with_replica`], the replica replicating from the port `upstream`
    /// gives for the master's (a relay in between, say).
    pub async fn start_with_replica_from<F: std::future::Future<Output = u16>>(
        upstream: impl FnOnce(u16) -> F,
    ) -> Self {
        let master = RedisServer::with_args(&[
            "--rename-command",
            "REPLICAOF",
            "",
            "--rename-command",
            "SLAVEOF",
            "",
        ])
        .await;
        let mut set = Self::watching(master, None, false).await;
        let master_port = upstream(set.master.port).await.to_string();
        let replica =
            RedisServer::with_args(&["--replicaof", "127.0.0.1", master_port.as_str()]).await;
        let replica_port = format!("{}", replica.port);
        // Known from the master's INFO is not enough: until the sentinel has the replica's own
        // INFO, it lists it with no working link to the master, and a master whose only
        // replica looks like that may take writes alone (what the failover tests must not see).
        wait_until(
            || {
                let replicas = set.sentinel.cli(&["sentinel", "replicas", "mymaster"]);
                let field = |name: &str| {
                    // Each replica is a list of names and values, its port among them.
                    replicas
                        .lines()
                        .map(str::trim)
                        .skip_while(|line| *line != replica_port)
                        .skip_while(|line| *line != name)
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned()
                };
                field("master-link-status") == "ok" && !field("flags").contains("disconnected")
            },
            "the sentinel to see the replica linked to the master",
        )
        .await;
        set.replica = Some(replica);
        set
    }

    /// The port of the server the sentinel names as master.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinel
            .cli(&["sentinel", "get-master-addr-by-name", "mymaster"])
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.sentinel.port)
    }
}
