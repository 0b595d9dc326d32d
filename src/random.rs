//! Every random value Tollgate makes (session ids, `state`, `nonce`, PKCE verifiers, `jti`,
//! authorization codes) comes from here, from the operating system's CSPRNG.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 32 random bytes (256 bits) as unpadded base64url: 43 characters.
pub fn token() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<32>())
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buffer = [0u8; N];
    // The OS generator does not fail on supported platforms; if it ever did, an all-zero value
    // must not be used, so fall back to aborting the request path through a fresh attempt.
    if aws_lc_rs::rand::fill(&mut buffer).is_err() {
        getrandom_fallback(&mut buffer);
    }
    buffer
}

fn getrandom_fallback(buffer: &mut [u8]) {
    // aws-lc's RNG failing means the process cannot make secrets safely.
    tracing::error!("the system random generator failed; exiting");
    let _ = buffer;
    std::process::abort();
}
