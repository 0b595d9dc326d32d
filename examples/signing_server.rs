//! The least an HTTP server that signs a token per request can do, as a reference for
//! `scripts/load-token-service.sh`: every `POST` is answered with one RS256 signature of the
//! same key over a message as long as an access token's signing input, in a JSON body as long
//! as Tollgate's `/token` answer. No routing, no client authentication, no claims, no log
//! line: what is left is the signature, hyper and the kernel's side of the sockets. Tollgate's
//! issuance per CPU second over this server's shows what Tollgate itself adds.
//!
//! `cargo run --release --example signing_server -- PORT KEY.pem`

// A reference server stops on what it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// Bytes of the signing input (header and claims) of the access token `load-token-service.sh`
/// has Tollgate issue.
const MESSAGE_BYTES: usize = 386;

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let (port, key_file) = match arguments.as_slice() {
        [_, port, key_file] => (port.parse::<u16>().expect("a port"), key_file),
        _ => panic!("usage: signing_server PORT KEY.pem"),
    };
    let pem = std::fs::read_to_string(key_file).expect("the key file");
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let key = Arc::new(RsaKeyPair::from_pkcs8(&STANDARD.decode(body).unwrap()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let key = key.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    std::future::ready(Ok::<_, Infallible>(answer(&key, request)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// One signature, in a body shaped like a token answer. The request body is not read: the
/// client's is a few dozen bytes, already in hyper's buffer.
fn answer(key: &RsaKeyPair, _request: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut token = "e".repeat(MESSAGE_BYTES);
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        token.as_bytes(),
        &mut signature,
    )
    .unwrap();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    let body = format!(
        "{{\"access_token\":\"{token}\",\"token_type\":\"Bearer\",\"expires_in\":1800,\"scope\":\"scim\"}}"
    );
    Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
