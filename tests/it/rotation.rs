//! SPEC §12: two-phase rotation of the token service's signing key and of the session secrets
//! across replicas, as a rolling update does it. Three replicas of one issuer share one Redis
//! (`token_service.store = "redis"`, so codes and grants are shared; sessions in Redis or in
//! the cookie). Phase one restarts them one by one with the new key in `retired_key_files`
//! and the new secret second in `session.secrets`; phase two restarts them one by one with the
//! new key signing (the old one retired) and the new secret first (the old one second). At
//! the start and after every restart, each replica mints a token and a session, and every
//! token and session minted so far is accepted by every replica (`/validate`, `/auth` with
//! the token, `/auth` with the session cookie), and every replica's JWKS publishes every key
//! that signed one. The one-step rotation the README used to describe — new key and secret
//! first on one replica while another still has only the old ones — is shown to break.
//!
//! The test plays the load balancer: every replica has a fixed address (a restart binds it
//! again), the issuer and `public_url` name the first one, and the test sends each step of a
//! login (`/signin`, the login form, `/callback`) to a replica of its choice.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use crate::support::browser::location;
use crate::support::redis::RedisServer;
use crate::support::{Browser, Gateway};

const OLD_SECRET: &str = "rotation-old-session-secret-0123456789abcdef";
const NEW_SECRET: &str = "rotation-new-session-secret-0123456789abcdef";

/// What a replica's config says about keys and secrets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// Before the rotation: the old key signs, the old secret seals.
    Old,
    /// Phase one: the new key published and accepted (retired), the new secret opens.
    Added,
    /// Phase two: the new key signs and the new secret seals; the old ones still accepted.
    Promoted,
}

struct Deployment {
    issuer: String,
    redis_url: String,
    session_store: &'static str,
    old_key: PathBuf,
    new_key: PathBuf,
    machine_secret_hash: String,
    alice_password_hash: String,
}

impl Deployment {
    fn config(&self, stage: Stage) -> String {
        let quoted = |path: &Path| format!("\"{}\"", path.display());
        let (signing, retired, secrets) = match stage {
            Stage::Old => (&self.old_key, String::new(), format!("\"{OLD_SECRET}\"")),
            Stage::Added => (
                &self.old_key,
                quoted(&self.new_key),
                format!("\"{OLD_SECRET}\", \"{NEW_SECRET}\""),
            ),
            Stage::Promoted => (
                &self.new_key,
                quoted(&self.old_key),
                format!("\"{NEW_SECRET}\", \"{OLD_SECRET}\""),
            ),
        };
        format!(
            r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "{issuer}"
[session]
store = "{store}"
secrets = [{secrets}]
redis_url = "{redis}"
[[provider]]
name = "self"
issuer = "{issuer}"
client_id = "gateway"
client_auth = "none"
audiences = ["odj"]
[forward_auth]
provider = "self"
[token_service]
issuer = "{issuer}"
store = "redis"
signing_key_file = {signing}
retired_key_files = [{retired}]
[[token_service.client]]
client_id = "machine"
client_secret_hash = "{machine}"
grants = ["client_credentials"]
source = "myapi"
audience = "odj"
[[token_service.client]]
client_id = "gateway"
grants = ["authorization_code"]
redirect_uris = ["{issuer}/callback"]
[[token_service.user]]
username = "alice"
password_hash = "{alice}"
email = "alice@example.com"
"#,
            issuer = self.issuer,
            store = self.session_store,
            redis = self.redis_url,
            signing = quoted(signing),
            machine = self.machine_secret_hash,
            alice = self.alice_password_hash,
        )
    }
}

/// One replica at a fixed address, running or stopped.
struct Replica {
    address: SocketAddr,
    stage: Stage,
    running: Option<Gateway>,
}

impl Replica {
    async fn start(address: SocketAddr, deployment: &Deployment, stage: Stage) -> Self {
        let mut replica = Self {
            address,
            stage,
            running: None,
        };
        replica.restart(deployment, stage).await;
        replica
    }

    /// Stops it (as SIGTERM would) and starts it again on the same address with `stage`.
    async fn restart(&mut self, deployment: &Deployment, stage: Stage) {
        if let Some(gateway) = self.running.take() {
            gateway.stop().await;
        }
        let config = tollgate::config::load(&deployment.config(stage), &Default::default())
            .unwrap_or_else(|problems| panic!("config: {problems:?}"));
        let listener = bind_again(self.address).await;
        let app = tollgate::app::start(
            config,
            Arc::new(tollgate::clock::SystemClock),
            Some(listener),
            None,
        )
        .await
        .unwrap();
        self.running = Some(Gateway::from_app(app));
        self.stage = stage;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// Binds `address` again right after the replica that held it stopped.
async fn bind_again(address: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = tokio::net::TcpListener::bind(address).await {
            return listener;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{address} stayed busy");
}

/// A token or a session one replica made, at one stage.
struct Minted {
    what: String,
    access_token: String,
    kid: String,
    session_cookies: String,
}

fn kid_of(token: &str) -> String {
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn client_credentials(replica: &Replica) -> String {
    let response = reqwest::Client::new()
        .post(replica.url("/token"))
        .basic_auth("machine", Some("machine-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Replaces the scheme and authority of `url` with `replica`'s: the load balancer's choice.
fn at(replica: &Replica, url: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    url.set_port(Some(replica.address.port())).unwrap();
    url.to_string()
}

/// Logs alice in with `/signin` on `first`, the login form on `second` and `/callback` on
/// `third`; returns the cookies the browser holds afterwards, as a `Cookie` header.
async fn log_in(first: &Replica, second: &Replica, third: &Replica) -> String {
    let mut browser = Browser::new();
    let signin = browser.get(&first.url("/signin?rd=/")).await;
    assert_eq!(signin.status(), 302);
    let authorize = at(second, &location(&signin));
    let query = authorize.split_once('?').unwrap().1.to_owned();
    let form = browser.get(&authorize).await;
    assert_eq!(form.status(), 200, "the login form");
    let submitted = browser
        .post_login(
            &second.url("/authorize"),
            &query,
            "username=alice&password=alice-password",
        )
        .await;
    assert_eq!(submitted.status(), 303, "alice's password");
    let callback = browser.get(&at(third, &location(&submitted))).await;
    assert_eq!(
        callback.status(),
        302,
        "a login begun on {} finishes on {}",
        first.address,
        third.address
    );
    assert!(browser.cookies.contains_key("tollgate"), "a session cookie");
    browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Statuses of `/validate` and `/auth` with the token, and of `/auth` with the session.
async fn answers(replica: &Replica, minted: &Minted) -> [u16; 3] {
    let client = reqwest::Client::new();
    let mut statuses = [0; 3];
    for (index, path) in ["/validate", "/auth"].into_iter().enumerate() {
        statuses[index] = client
            .get(replica.url(path))
            .bearer_auth(&minted.access_token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    statuses[2] = client
        .get(replica.url("/auth"))
        .header("cookie", &minted.session_cookies)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    statuses
}

async fn published_kids(replica: &Replica) -> Vec<String> {
    let jwks: Value = reqwest::get(replica.url("/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Each replica mints a token and a session (the login crossing all three replicas, begun on
/// it); then every replica accepts everything minted so far and publishes every kid used.
async fn check_state(replicas: &[Replica], minted: &mut Vec<Minted>) {
    let stages: Vec<Stage> = replicas.iter().map(|replica| replica.stage).collect();
    for (index, replica) in replicas.iter().enumerate() {
        let access_token = client_credentials(replica).await;
        let next = |step: usize| &replicas[(index + step) % replicas.len()];
        minted.push(Minted {
            what: format!("minted on replica {index} while the stages were {stages:?}"),
            kid: kid_of(&access_token),
            access_token,
            session_cookies: log_in(replica, next(1), next(2)).await,
        });
    }
    for (index, replica) in replicas.iter().enumerate() {
        let kids = published_kids(replica).await;
        for item in minted.iter() {
            assert_eq!(
                answers(replica, item).await,
                [200, 200, 200],
                "/validate, /auth with the token, /auth with the session on replica {index} \
                 (stages {stages:?}) for what was {}",
                item.what
            );
            assert!(
                kids.contains(&item.kid),
                "replica {index} (stages {stages:?}) publishes {kids:?}, not the key of what \
                 was {}",
                item.what
            );
        }
    }
}

fn generate_key(path: &Path) {
    let output = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn deployment(
    redis: &RedisServer,
    session_store: &'static str,
) -> (Deployment, Vec<Replica>) {
    let dir = crate::support::scratch_dir("rotation");
    let (old_key, new_key) = (dir.join("old.pem"), dir.join("new.pem"));
    generate_key(&old_key);
    generate_key(&new_key);
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let port = crate::support::free_port();
        addresses.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let deployment = Deployment {
        issuer: format!("http://{}", addresses[0]),
        redis_url: redis.url(),
        session_store,
        old_key,
        new_key,
        machine_secret_hash: tollgate::hash_password("machine-secret").unwrap(),
        alice_password_hash: tollgate::hash_password("alice-password").unwrap(),
    };
    let mut replicas = Vec::new();
    for address in addresses {
        replicas.push(Replica::start(address, &deployment, Stage::Old).await);
    }
    (deployment, replicas)
}

async fn rolling_rotation(session_store: &'static str) {
    let redis = RedisServer::standalone().await;
    let (deployment, mut replicas) = deployment(&redis, session_store).await;
    let mut minted = Vec::new();
    check_state(&replicas, &mut minted).await;
    for stage in [Stage::Added, Stage::Promoted] {
        for index in 0..replicas.len() {
            replicas[index].restart(&deployment, stage).await;
            check_state(&replicas, &mut minted).await;
        }
    }
    // Three per state: the start, three restarts with the key added, three promoting it.
    let (old_kid, new_kid) = (&minted[0].kid, &minted[minted.len() - 1].kid);
    assert_ne!(old_kid, new_kid, "the signing key did change");
    assert!(
        minted[..12].iter().all(|item| &item.kid == old_kid),
        "until phase two, only the old key signs"
    );
    assert!(
        minted[18..].iter().all(|item| &item.kid == new_kid),
        "after it, only the new key"
    );
    for replica in replicas {
        replica.running.unwrap().stop().await;
    }
}

#[tokio::test]
async fn a_two_phase_rolling_rotation_of_key_and_secrets_keeps_every_token_and_redis_session() {
    rolling_rotation("redis").await;
}

#[tokio::test]
async fn a_two_phase_rolling_rotation_of_key_and_secrets_keeps_every_token_and_cookie_session() {
    rolling_rotation("cookie").await;
}

/// The reason for two phases: one replica signing with a key, and sealing with a secret, that
/// another does not know yet.
#[tokio::test]
async fn a_one_step_rotation_breaks_while_replicas_differ() {
    let redis = RedisServer::standalone().await;
    let (deployment, mut replicas) = deployment(&redis, "redis").await;
    replicas[0].restart(&deployment, Stage::Promoted).await;
    let (updated, old) = (&replicas[0], &replicas[1]);
    let token = client_credentials(updated).await;
    let session_cookies = log_in(updated, updated, updated).await;
    let from_updated = Minted {
        what: "minted on the updated replica".to_owned(),
        kid: kid_of(&token),
        access_token: token,
        session_cookies,
    };
    assert_eq!(
        answers(updated, &from_updated).await,
        [200, 200, 200],
        "the updated replica accepts its own"
    );
    assert_eq!(
        answers(old, &from_updated).await,
        [401, 401, 401],
        "a replica with only the old key and secret refuses the updated one's token and session"
    );
    assert!(
        !published_kids(old).await.contains(&from_updated.kid),
        "and does not publish the key it was signed with"
    );
    for replica in replicas {
        replica.running.unwrap().stop().await;
    }
}
