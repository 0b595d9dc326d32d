//! The README's HAProxy recipe, as written there (addresses and certificate replaced), run in
//! Debian's HAProxy in front of Tollgate's proxy: what a client says of itself never reaches
//! the application or the login.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::proxy::proxy_config;
use crate::support::test_ca::TestCa;
use crate::support::{Gateway, TestIdp, TestUpstream, free_port, scratch_dir};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy in the foreground; stopped on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's `haproxy` block.
fn recipe() -> String {
    crate::support::readme_block("### HAProxy in front of replicas\n", "haproxy").to_owned()
}

#[tokio::test]
async fn the_readme_haproxy_recipe_says_what_haproxy_knows_never_what_the_client_said() {
    assert!(
        std::path::Path::new(HAPROXY).exists(),
        "haproxy is missing: scripts/test.sh installs it"
    );
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
path_prefix = "/open"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
[[route]]
upstream = "{upstream}"
provider = "corp"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let ca = TestCa::new("haproxy");
    let issued = ca.issue("haproxy");
    let pem = scratch_dir("haproxy").join("tollgate.pem");
    let mut both = std::fs::read(&issued.cert).unwrap();
    both.extend(std::fs::read(&issued.key).unwrap());
    std::fs::write(&pem, both).unwrap();
    let port = free_port();
    let config = recipe()
        .replace(
            "bind :443 ssl crt /etc/haproxy/tollgate.pem",
            &format!("bind 127.0.0.1:{port} ssl crt {}", pem.display()),
        )
        .replace(
            "    server tollgate-a 10.0.0.11:4180 check port 8080\n    server tollgate-b 10.0.0.12:4180 check port 8080\n",
            &format!(
                "    server tollgate-a {} check port {}\n",
                gateway.app.public_addr,
                gateway.app.admin_addr.expect("an admin listener").port()
            ),
        );
    assert!(config.contains(&format!("127.0.0.1:{port}")), "{config}");
    assert!(!config.contains("10.0.0.1"), "{config}");
    let file = scratch_dir("haproxy-config").join("haproxy.cfg");
    std::fs::write(&file, &config).unwrap();
    let _haproxy = Haproxy(
        Command::new(HAPROXY)
            .args(["-db", "-f"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts"),
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.cert_pem()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let lies = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-for", "203.0.113.66"),
        ("x-real-ip", "203.0.113.66"),
        ("x_real_ip", "203.0.113.66"),
        ("x-client-ip", "203.0.113.66"),
        ("client-ip", "203.0.113.66"),
        ("true-client-ip", "203.0.113.66"),
        ("cf-connecting-ip", "203.0.113.66"),
        ("x-cluster-client-ip", "203.0.113.66"),
        ("x-original-host", "evil.example"),
        ("x-forwarded-server", "evil.example"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=203.0.113.66;host=evil.example;proto=http"),
    ];
    let send = |path: &str| {
        let mut request = client.get(format!("{base}{path}"));
        for (name, value) in lies {
            request = request.header(name, value);
        }
        request.send()
    };
    // HAProxy's health check finds the replica up first.
    let mut echoed = None;
    for _ in 0..100 {
        if let Ok(answer) = send("/open/x").await
            && answer.status() == 200
        {
            echoed = Some(answer.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let echoed = echoed.expect("HAProxy passed a request on to Tollgate");
    let seen = |name: &str| echoed["headers"][name].clone();
    assert_eq!(
        seen("x-forwarded-host"),
        serde_json::json!([format!("localhost:{port}")])
    );
    assert_eq!(seen("x-forwarded-proto"), serde_json::json!(["https"]));
    // HAProxy's address for the client, then Tollgate's for HAProxy.
    assert_eq!(
        seen("x-forwarded-for"),
        serde_json::json!(["127.0.0.1, 127.0.0.1"])
    );
    let text = echoed.to_string();
    assert!(!text.contains("203.0.113.66"), "{text}");
    assert!(!text.contains("evil.example"), "{text}");
    // The login's redirect URI is on the host the client reached, over https.
    let signin = send("/signin?rd=/").await.unwrap();
    assert_eq!(signin.status(), 302);
    let location = signin.headers()["location"].to_str().unwrap().to_owned();
    let redirect_uri = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "redirect_uri")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    assert_eq!(redirect_uri, format!("{base}/callback"));
}
