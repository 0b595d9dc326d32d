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
    // The OS generator does not fail on supported platforms. If it ever did, the process could
    // not make secrets safely, and an all-zero value must never be used: stop at once.
    if aws_lc_rs::rand::fill(&mut buffer).is_err() {
        // Straight to standard error: a line queued for the log writer would be lost with the
        // process. Not `eprintln!`, which panics when standard error is a closed pipe.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"tollgate: the system random generator failed; exiting\n",
        );
        std::process::abort();
    }
    buffer
}
