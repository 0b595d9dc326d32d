//! `Secret<T>`: a value that never shows itself in `Debug` or logs, and constant-time equality
//! for secrets given as strings.

use std::fmt;

/// A secret value. `Debug` prints `Secret(***)`; the value is reached only through `expose`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value itself. Call sites are where secrets are used: keep them few.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    left.len() == right.len() && bool::from(left.ct_eq(right))
}

/// A `*_file` value as a problem or an error names it: in full when it reads like a path
/// (`/run/x`, `secrets.txt`); else not, as it may be the secret itself (a key's PEM, a
/// password), written under the wrong key.
pub fn shown_path(file: &str) -> String {
    if looks_like_path(file) {
        format!("`{file}`")
    } else {
        format!(
            "the file named there ({} characters, not shown: is it the secret itself?)",
            file.chars().count()
        )
    }
}

/// Whether a `*_file` value reads like a path rather than a secret: an absolute or `./`
/// path, or a name with an extension secrets are kept in.
fn looks_like_path(file: &str) -> bool {
    // A secret may hold `.` or `/` too: only an absolute or `./` path, or a name with a file
    // extension secrets are kept in, reads like a path.
    const EXTENSIONS: [&str; 8] = [
        ".pem", ".key", ".crt", ".json", ".txt", ".jwks", ".secret", ".token",
    ];
    let plain = file
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"._/-".contains(&byte));
    // An absolute path may also hold `@` and `:` (systemd's `/run/credentials/x@y.service/`),
    // which base64 never does.
    let absolute = file.starts_with('/')
        && file
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._/-@:".contains(&byte));
    absolute
        || (plain
            && (file.starts_with("./")
                || file.starts_with("../")
                || EXTENSIONS.iter().any(|extension| file.ends_with(extension))))
}

/// [`shown_path`] of a path.
pub fn shown(path: &std::path::Path) -> String {
    shown_path(&path.to_string_lossy())
}
