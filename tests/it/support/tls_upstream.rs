//! A TLS upstream written on rustls directly: offers `h2` and `http/1.1` by ALPN, records the
//! SNI and the protocol each connection chose, and answers an HTTP/1.1 `Upgrade` request with
//! 101, then echoes every byte back. Over HTTP/2 (hyper's server) it answers `/bytes/<n>` with
//! `n` bytes, holds `/hang` unanswered (counting them) at most 100 streams a connection, and
//! answers every other request with the body it received and the names of the request's
//! trailers.

use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::test_ca::Issued;

/// What one connection's handshake said: the SNI host, and the ALPN protocol chosen.
pub type Handshake = (Option<String>, Option<String>);

pub struct TlsUpstream {
    pub port: u16,
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// HTTP/2 connections open now.
    pub open_http2: Arc<std::sync::atomic::AtomicUsize>,
    /// `/hang` requests received.
    pub hanging: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(issued: &Issued) -> Self {
        let chain = CertificateDer::pem_file_iter(&issued.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let open_http2 = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open = open_http2.clone();
        let hanging = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hung = hanging.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, open, hung) =
                    (acceptor.clone(), seen.clone(), open.clone(), hung.clone());
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let (_, connection) = stream.get_ref();
                    let handshake = (
                        connection.server_name().map(str::to_owned),
                        connection
                            .alpn_protocol()
                            .map(|protocol| String::from_utf8_lossy(protocol).into_owned()),
                    );
                    let http2 = handshake.1.as_deref() == Some("h2");
                    seen.lock().unwrap().push(handshake);
                    if http2 {
                        open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .max_concurrent_streams(100)
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(stream),
                            hyper::service::service_fn(move |request| {
                                body_and_trailers(request, hung.clone())
                            }),
                        )
                        .await;
                        open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        upgrade_and_echo(&mut stream).await;
                    }
                });
            }
        });
        Self {
            port,
            handshakes,
            open_http2,
            hanging,
            task,
        }
    }
}

/// `body=… trailers=…`: the request's body and its trailers' names, in the order received.
async fn body_and_trailers(
    request: hyper::Request<hyper::body::Incoming>,
    hanging: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<hyper::Response<http_body_util::Full<axum::body::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    if request.uri().path() == "/hang" {
        hanging.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    if let Some(count) = request
        .uri()
        .path()
        .strip_prefix("/bytes/")
        .and_then(|count| count.parse::<usize>().ok())
    {
        return Ok(hyper::Response::new(http_body_util::Full::new(
            vec![b'x'; count].into(),
        )));
    }
    let text = match request.into_body().collect().await {
        Ok(collected) => {
            let names = collected
                .trailers()
                .map(|trailers| {
                    trailers
                        .keys()
                        .map(|name| name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let body = collected.to_bytes();
            format!("body={} trailers={names}", String::from_utf8_lossy(&body))
        }
        Err(error) => format!("error={error}"),
    };
    Ok(hyper::Response::new(http_body_util::Full::new(text.into())))
}

/// Reads an HTTP/1.1 request head; for an `Upgrade` request answers 101 and echoes.
async fn upgrade_and_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    let Some(head) = super::read_request_head(stream).await else {
        return;
    };
    let head = head.to_ascii_lowercase();
    if !head
        .lines()
        .next()
        .is_some_and(|line| line.ends_with(" http/1.1"))
        || !head.contains("\r\nupgrade: echo\r\n")
    {
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    if stream
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .is_err()
        || stream.flush().await.is_err()
    {
        return;
    }
    let mut buffer = [0u8; 1024];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0
            || stream.write_all(&buffer[..read]).await.is_err()
            || stream.flush().await.is_err()
        {
            return;
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
