//! The README's Caddy recipe, as written there (addresses replaced, HTTPS and the admin API
//! off), in Debian's Caddy in front of `TestUpstream` and Tollgate's forward-auth: what a
//! client says of itself never reaches the application.

use serde_json::{Value, json};

use crate::support::{Gateway, TestIdp, TestUpstream, free_port};

/// A running Caddy, stopped on drop.
struct Caddy {
    child: std::process::Child,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Caddy serving the README's recipe on a free loopback port for `gateway` and `upstream`;
/// answers Caddy and its base URL.
async fn recipe_in_caddy(gateway: &Gateway, upstream: &TestUpstream) -> (Caddy, String) {
    let port = free_port();
    let recipe = crate::support::readme_block("### Caddy\n", "caddyfile");
    let tollgate = gateway.app.public_addr.to_string();
    let block = recipe
        .replace("app.example.com {", &format!("http://127.0.0.1:{port} {{"))
        .replace("127.0.0.1:4180", &tollgate)
        .replace("app:8080", &upstream.addr.to_string());
    assert!(
        !block.contains("4180") && !block.contains("app:8080"),
        "{block}"
    );
    let dir = crate::support::scratch_dir("caddy");
    let file = dir.join("Caddyfile");
    std::fs::write(
        &file,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n{block}"),
    )
    .unwrap();
    let child = std::process::Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("caddy is installed (scripts/test.sh installs it)");
    let caddy = Caddy { child };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (caddy, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("caddy never listened on {port}");
}

/// The identity headers of the gateways Tollgate replaces and the recipe's own injected
/// header, as a client sends them: none reaches the application but the value `/auth` gave;
/// a spelling with `_`, which Caddy passes on, is refused.
#[tokio::test]
async fn the_readme_caddy_recipe_passes_on_no_identity_a_client_claims() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let (_caddy, base) = recipe_in_caddy(&gateway, &upstream).await;
    let token = idp
        .access_token()
        .claim("email", json!("user@example.com"))
        .sign();
    let claimed = [
        "X-Auth-Email",
        "X-Forwarded-User",
        "X-Auth-Request-Email",
        "Remote-User",
        "X-authentik-username",
        "X-Pomerium-Claim-Email",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "X-MS-TOKEN-AAD-ID-TOKEN",
        "X-Goog-Authenticated-User-Email",
        "X-Goog-IAP-JWT-Assertion",
        "X-Vouch-User",
        "Cf-Access-Authenticated-User-Email",
        "X-Userinfo",
        "X-Access-Token",
        "X-Id-Token",
        "X-Remote-User",
        "X-Consumer-Username",
        "X-Authenticated-Userid",
        "X-Credential-Identifier",
        "X-Anonymous-Consumer",
        "Oidc-Claim-Email",
    ];
    let mut request = reqwest::Client::new()
        .get(format!("{base}/reports"))
        .bearer_auth(&token);
    for name in claimed {
        request = request.header(name, "ceo@example.com");
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let echoed: Value = answer.json().await.unwrap();
    for name in claimed {
        let name = name.to_ascii_lowercase();
        if name == "x-auth-email" {
            assert_eq!(
                echoed["headers"][&name],
                json!(["user@example.com"]),
                "{echoed}"
            );
        } else {
            assert!(
                echoed["headers"].get(&name).is_none(),
                "{name} reached the application: {echoed}"
            );
        }
    }
    // What an application may read as another path or host than the site's rules'.
    let overrides = [
        ("Forwarded", "host=admin.example.com"),
        ("X-Original-URL", "/admin/users"),
        ("X_Original_URL", "/admin/users"),
        ("X-Original-URI", "/admin/users"),
        ("X-Rewrite-URL", "/admin/users"),
        ("X.Rewrite.URL", "/admin/users"),
        ("X-Forwarded-Uri", "/admin/users"),
        ("X_Forwarded_Host", "admin.example.com"),
        ("X-Forwarded_Host", "admin.example.com"),
        ("X.Forwarded.Host", "admin.example.com"),
    ];
    let mut request = reqwest::Client::new()
        .get(format!("{base}/reports"))
        .bearer_auth(&token);
    for (name, value) in overrides {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let echoed: Value = answer.json().await.unwrap();
    let text = echoed["headers"].to_string();
    assert!(
        !text.contains("/admin/users") && !text.contains("admin.example.com"),
        "an override reached the application: {echoed}"
    );
    // A spelling with `_` the recipe's prefixes remove never reaches the application; one they
    // miss reaches `/auth`, which refuses it.
    let removed = reqwest::Client::new()
        .get(format!("{base}/reports"))
        .bearer_auth(&token)
        .header("X_Forwarded_User", "ceo")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let echoed: Value = removed.json().await.unwrap();
    assert!(!echoed["headers"].to_string().contains("ceo"), "{echoed}");
    let refused = reqwest::Client::new()
        .get(format!("{base}/reports"))
        .bearer_auth(&token)
        .header("X-Auth-Request_Email", "ceo@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}
