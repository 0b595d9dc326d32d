//! The canonical request (SPEC §4.1): the one reading of a request's path and host that every
//! decision uses — forward-auth skip rules, route choice, route `skip` rules — and that the
//! proxy sends upstream, so Tollgate never decides on one reading while nginx in front of it or
//! the application behind it serves another. Pure functions; the rules are listed in
//! `docs/security.md`.

use std::borrow::Cow;

/// Why a path has no single reading. The message is safe to show the client (it never
/// repeats the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not starting with `/`.
    #[error("the path does not start with /")]
    NotAbsolute,
    /// A control character, NUL, space, backslash, `#` or a byte outside ASCII.
    #[error("the path holds a character that is not allowed")]
    BadCharacter,
    /// `%` not followed by two hex digits.
    #[error("the path holds an invalid percent-encoding")]
    BadPercentEncoding,
    /// A percent-encoded `/`, `\`, `?`, `#`, `%` or control character.
    #[error("the path holds a percent-encoded separator")]
    EncodedSeparator,
    /// A `..` that climbs above the root.
    #[error("the path climbs above the root")]
    AboveRoot,
    /// A `.` or `..` segment with `;` parameters (`/public/..;/admin`): Tomcat and Jetty drop
    /// the parameters and resolve it, other servers keep it as a name.
    #[error("the path holds a dot segment with parameters")]
    DotSegmentParameters,
    /// A segment that is only `;` parameters with a `..` after it (`/public/;/../admin`):
    /// Tomcat drops the parameters and merges the empty segment away (`/admin`), other
    /// servers keep `;` as a name that the `..` removes (`/public/admin`).
    #[error("the path holds a segment that is only parameters, then `..`")]
    EmptySegmentParameters,
    /// A `..` that removes an empty segment (`/admin//../x`): merged first, as nginx and
    /// Tollgate read it, that is `/x`; an application that resolves dot segments without
    /// merging slashes (RFC 3986 §5.2.4, WHATWG URL: Node's `new URL`, Deno, Bun) serves
    /// `/admin/x`.
    #[error("the path holds an empty segment that a `..` removes")]
    EmptySegmentDots,
}

/// The canonical form of `raw` (a path, maybe followed by a query, which is dropped): a `#`
/// is refused, not taken for a fragment (no client sends one; nginx passes it on as part of
/// the path, which an application may resolve: `/public/#/../../admin`); percent-encoded unreserved characters decoded, other percent-encodings in upper
/// case, runs of `/` merged, then `.` and `..` segments resolved. Borrowed when `raw`'s path is
/// already canonical, as almost every request's is.
///
/// # Errors
/// A `PathError` when the path has no single reading.
pub fn canonical_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass to the query's `?` (a path is short: a byte loop, no searcher to set up).
    let mut end = raw.len();
    let mut simple = true;
    let mut previous = 0u8;
    for (index, &byte) in raw.as_bytes().iter().enumerate() {
        if byte == b'?' {
            end = index;
            break;
        }
        if byte <= b' ' || byte >= 0x7f || byte == b'\\' || byte == b'#' {
            return Err(PathError::BadCharacter);
        }
        if byte == b'%' || (previous == b'/' && matches!(byte, b'/' | b'.' | b';')) {
            simple = false;
        }
        previous = byte;
    }
    // `?` is ASCII: a character boundary.
    let path = raw.get(..end).unwrap_or(raw);
    if simple {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    resolve_segments(&decoded).map(Cow::Owned)
}

/// Decodes percent-encoded unreserved characters; keeps other encodings, in upper case.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte != b'%' {
            decoded.push(char::from(byte));
            index += 1;
            continue;
        }
        let hex = |offset: usize| {
            bytes
                .get(index + offset)
                .and_then(|digit| char::from(*digit).to_digit(16))
                .ok_or(PathError::BadPercentEncoding)
        };
        let value =
            u8::try_from(hex(1)? * 16 + hex(2)?).map_err(|_| PathError::BadPercentEncoding)?;
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            decoded.push(char::from(value));
        } else if value < 0x20 || value == 0x7f || b"/\\?#%".contains(&value) {
            return Err(PathError::EncodedSeparator);
        } else {
            decoded.push('%');
            decoded.push(char::from(HEX[usize::from(value >> 4)]));
            decoded.push(char::from(HEX[usize::from(value & 0xf)]));
        }
        index += 3;
    }
    Ok(decoded)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Merges runs of `/` (as nginx's `merge_slashes` does), then resolves `.` and `..` (RFC 3986
/// §5.2.4); a `..` above the root is an error, as nginx answers it with 400.
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let mut output: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // A segment that is only parameters (`;x`, Tomcat's `/app/;jsessionid=…`) is a name here
    // and nothing to Tomcat, harmless until a `..` counts it.
    let mut parameters_only = false;
    // The same path resolved without merging slashes (RFC 3986 §5.2.4): whether each segment
    // on its stack is empty. Its non-empty segments are `output`'s until a `..` removes an
    // empty one, where the two readings part.
    let mut unmerged: Vec<bool> = Vec::new();
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        // `;` as sent or percent-encoded (in upper case by now): an application that decodes
        // the path before it drops parameters reads `..%3B` as `..;`, which is `..` there.
        let name = segment.split_once(';').map_or(segment, |(name, _)| name);
        let name = name.split_once("%3B").map_or(name, |(name, _)| name);
        if name.len() < segment.len() {
            match name {
                "." | ".." => return Err(PathError::DotSegmentParameters),
                "" => parameters_only = true,
                _ => {}
            }
        }
        match segment {
            "" => {
                trailing_slash = true;
                // The last one is the trailing slash, in both readings.
                if segments.peek().is_some() {
                    unmerged.push(true);
                }
            }
            "." => trailing_slash = true,
            ".." if parameters_only => return Err(PathError::EmptySegmentParameters),
            ".." => {
                if unmerged.pop() == Some(true) {
                    return Err(PathError::EmptySegmentDots);
                }
                output.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            other => {
                output.push(other);
                unmerged.push(false);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &output {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || output.is_empty() {
        result.push('/');
    }
    Ok(result)
}

/// Whether a segment of `path` (without its query) is `.` or `..`, as sent or with a dot
/// percent-encoded (`%2e`, `.%2E`), segments ending at a `/` sent or encoded (`%2F`: nginx
/// decodes it and goes on resolving, `/admin/x/..%2F..%2Fy` is `/y` there). nginx resolves it
/// before it picks a location, and so do the skip rules (on [`canonical_path`]); an
/// application that routes on the path as sent does not: Express's `app.use('/admin')` takes
/// `/admin/../public/x`, which nginx serves from `location /public/`.
pub fn holds_a_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Only a path holding a dot, sent or encoded, can.
    if memchr::memchr2(b'.', b'%', bytes).is_none() {
        return false;
    }
    let is_dots = |dots: usize, other: bool| !other && matches!(dots, 1 | 2);
    let (mut dots, mut other, mut index) = (0, false, 0);
    while let Some(&byte) = bytes.get(index) {
        let encoded = (byte == b'%' && bytes.get(index + 1) == Some(&b'2'))
            .then(|| bytes.get(index + 2).map(u8::to_ascii_lowercase))
            .flatten();
        match (byte, encoded) {
            (b'/', _) | (_, Some(b'f')) => {
                if is_dots(dots, other) {
                    return true;
                }
                (dots, other) = (0, false);
            }
            (b'.', _) | (_, Some(b'e')) => dots += 1,
            _ => other = true,
        }
        index += if encoded.is_some_and(|code| code == b'e' || code == b'f') {
            3
        } else {
            1
        };
    }
    is_dots(dots, other)
}

/// Whether `path` (without its query) holds a `..` that removes an empty segment
/// ([`PathError::EmptySegmentDots`]), where a server that merges slashes and one that does not
/// part: with its `%2E`s and `%2F`s decoded and whatever other percent-encodings it holds
/// (`/admin//../users%2Fx`, which [`canonical_path`] refuses before it looks at segments), and
/// past a `..` above the root.
pub fn removes_an_empty_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    let encoded = memchr::memchr(b'%', bytes).is_some();
    // Neither an empty segment nor a `..` to remove one: almost every path, without a copy.
    let dots = memchr::memmem::find(bytes, b"..").is_some()
        || (encoded
            && bytes
                .windows(3)
                .any(|window| window.eq_ignore_ascii_case(b"%2e")));
    let empty = memchr::memmem::find(bytes, b"//").is_some()
        || (encoded
            && bytes
                .windows(3)
                .any(|window| window.eq_ignore_ascii_case(b"%2f")));
    if !dots || !empty {
        return false;
    }
    // `%2E` is a dot to both readings, and `%2F` a slash to one that decodes first.
    let decoded = if encoded {
        let mut decoded = String::with_capacity(path.len());
        let mut rest = path;
        while let Some(at) = rest.find('%') {
            decoded.push_str(&rest[..at]);
            let code = rest.get(at..at + 3).unwrap_or("");
            if code.eq_ignore_ascii_case("%2e") {
                decoded.push('.');
            } else if code.eq_ignore_ascii_case("%2f") {
                decoded.push('/');
            } else {
                decoded.push_str(code.get(..1).unwrap_or("%"));
                rest = &rest[at + 1..];
                continue;
            }
            rest = &rest[at + 3..];
        }
        decoded.push_str(rest);
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(path)
    };
    // Whether each segment on the unmerged reading's stack is empty; a `..` above the root
    // stays at the root (as Traefik and browsers clamp it), so an earlier one hides nothing.
    let mut empty: Vec<bool> = Vec::new();
    let mut segments = decoded.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        match segment {
            // The last one is the trailing slash, in both readings.
            "" if segments.peek().is_some() => empty.push(true),
            "" | "." => {}
            ".." => {
                if empty.pop() == Some(true) {
                    return true;
                }
            }
            _ => empty.push(false),
        }
    }
    false
}

/// Whether `path` (without its query) holds `;` parameters, as sent or percent-encoded: `%3B`
/// is a `;` to an application that decodes the path before it drops parameters. A proxy in
/// front chooses its location on a path with them (`/admin;x/users` is not under `/admin/` to
/// nginx or Envoy) that Tomcat, Jetty and Spring serve without them.
pub fn holds_parameters(path: &str) -> bool {
    let bytes = path.as_bytes();
    memchr::memchr2_iter(b';', b'%', bytes).any(|at| {
        bytes[at] == b';'
            || bytes
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.eq_ignore_ascii_case(b"3b"))
    })
}

/// The other readings of a canonical path that an application behind Tollgate may take:
/// without the `;` parameters of its segments (Tomcat, Jetty and Spring drop them, so
/// `/admin;x/users` is `/admin/users` there), and with its remaining percent-encodings decoded
/// (`/users/%40me` is `/users/@me` to most applications). Empty for a path with neither `;`
/// nor `%`, as almost every path is. A decision that must hold for whatever the application
/// serves looks at each reading.
pub fn other_readings(path: &str) -> Vec<String> {
    let mut readings = Vec::new();
    let has_parameters = path.contains(';');
    if has_parameters && let Ok(reading) = resolve_segments(&without_parameters(path)) {
        readings.push(reading);
    }
    if path.contains('%') {
        let decoded = decode_all(path);
        // Parameters as sent, or percent-encoded ones (`%3B`) that decoding made parameters.
        if decoded.contains(';') {
            // Without its parameters, a segment that was only `%3B…` is empty: merged, as the
            // application merges it (`/%3Bx/admin` is `/admin` there).
            let stripped = without_parameters(&decoded);
            readings.push(resolve_segments(&stripped).unwrap_or(stripped));
        }
        readings.push(decoded);
    }
    readings
}

/// `path` without the format suffix of its last segment (`/admin.json` is `/admin`, and so is
/// `/admin.json/`), as Rails (`/admin(.:format)`, which drops a trailing slash) and Spring's
/// suffix patterns read it; `None` when the last segment has no `.` after its first character
/// (`/.well-known` has none).
pub fn without_format(path: &str) -> Option<&str> {
    let path = path
        .strip_suffix('/')
        .filter(|rest| !rest.is_empty())
        .unwrap_or(path);
    let last = path.rfind('/').map_or(0, |at| at + 1);
    let dot = path.get(last + 1..)?.find('.')?;
    path.get(..last + 1 + dot)
}

/// `path` without one trailing slash (`/admin/` is `/admin` to Rails, to Express and Spring
/// MVC by default, and to ASP.NET Core); `None` for `/` and a path without one.
pub fn without_trailing_slash(path: &str) -> Option<&str> {
    path.strip_suffix('/').filter(|rest| !rest.is_empty())
}

/// `path` with the `;` parameters of each segment dropped (`/a;x/b` is `/a/b`).
fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split_once(';').map_or(segment, |(name, _)| name))
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` with every percent-encoding decoded (a canonical path holds only valid ones); bytes
/// that are not UTF-8 become U+FFFD.
fn decode_all(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let value = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match value {
            Some(value) => {
                decoded.push(value);
                index += 3;
            }
            None => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The host name a `Host` value (or an absolute-form target's authority) names: lower case,
/// without the port and without one trailing dot, so `App.Example.com.:443` is
/// `app.example.com`. IPv6 literals lose their brackets. `None` for a value that is not a host.
pub fn canonical_host(value: &str) -> Option<Cow<'_, str>> {
    let name = if let Some(rest) = value.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        // The longest IPv6 text, an IPv4 tail included, is 45 bytes.
        let valid = address.contains(':')
            && address.len() <= 45
            && address
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit() || b":.".contains(&byte));
        return valid.then(|| lower(address));
    } else {
        // By bytes, not `rsplit_once`: this runs on every request, and a host is short.
        let name = match value.bytes().rposition(|byte| byte == b':') {
            // `:` is ASCII: character boundaries on both sides.
            Some(at) if is_port(value.get(at + 1..)?) => value.get(..at)?,
            Some(_) => return None,
            None => value,
        };
        name.strip_suffix('.').unwrap_or(name)
    };
    (is_host_name(name) && !is_loose_ipv4(name)).then(|| lower(name))
}

/// Whether `name` ends in a number (its last label all digits, or `0x` and hex) without being
/// a dotted quad as written: a URL parser (WHATWG, `url`) reads `10.5`, `0x0a000005` or
/// `012.0.0.5` as an IPv4 address, which a route matching the text would not.
fn is_loose_ipv4(name: &str) -> bool {
    let last = match name.bytes().rposition(|byte| byte == b'.') {
        Some(at) => name.get(at + 1..).unwrap_or(""),
        None => name,
    };
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|digits| digits.bytes().all(|byte| byte.is_ascii_hexdigit()));
    let number = hex || (!last.is_empty() && last.bytes().all(|byte| byte.is_ascii_digit()));
    number && !is_dotted_quad(name)
}

/// Whether `name` is four decimal numbers of at most 255, without leading zeros, joined by
/// dots: an IPv4 address as its own canonical text. One pass over the bytes, without
/// formatting or splitting: it runs for every request whose `Host` is an address.
fn is_dotted_quad(name: &str) -> bool {
    let (mut dots, mut digits, mut value, mut leading_zero) = (0, 0, 0u16, false);
    for &byte in name.as_bytes() {
        match byte {
            b'0'..=b'9' => {
                if digits == 0 {
                    leading_zero = byte == b'0';
                } else if leading_zero || digits == 3 {
                    return false;
                }
                digits += 1;
                value = value * 10 + u16::from(byte - b'0');
            }
            b'.' if digits > 0 && value <= 255 && dots < 3 => {
                dots += 1;
                digits = 0;
                value = 0;
            }
            _ => return false,
        }
    }
    dots == 3 && digits > 0 && value <= 255
}

/// Labels of letters, digits, `-` and `_`, separated by single dots: not empty, no dot at
/// either end, no two dots together. One pass over the bytes (it runs on every request).
fn is_host_name(name: &str) -> bool {
    // DNS's limits: 253 bytes, 63 a label.
    if name.len() > 253 {
        return false;
    }
    // Starts as if after a dot, so that a leading dot (and an empty name) is refused.
    let mut label = 0;
    for &byte in name.as_bytes() {
        if byte == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if (byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') && label < 63 {
            label += 1;
        } else {
            return false;
        }
    }
    label > 0
}

fn lower(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Why a request's host cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The `Host` header (or the target's authority) is not a host.
    #[error("invalid Host header")]
    Invalid,
    /// The absolute-form target names another host than the `Host` header.
    #[error("the Host header and the request target name different hosts")]
    Disagree,
    /// More than one `Host` header (RFC 9112 §3.2: 400): an upstream might read the other.
    #[error("more than one Host header")]
    Repeated,
}

/// A request's `Host` header, as sent.
///
/// # Errors
/// `Repeated` when there is more than one.
pub fn host_header(headers: &axum::http::HeaderMap) -> Result<Option<&[u8]>, HostError> {
    let mut values = headers.get_all(axum::http::header::HOST).iter();
    match (values.next(), values.next()) {
        (_, Some(_)) => Err(HostError::Repeated),
        (first, None) => Ok(first.map(axum::http::HeaderValue::as_bytes)),
    }
}

/// The canonical host of a request from its `Host` header and its target's authority (absolute
/// form, or HTTP/2's `:authority`); `None` when it has neither.
///
/// # Errors
/// `Invalid` or `Disagree`.
pub fn request_host<'a>(
    host_header: Option<&'a [u8]>,
    authority: Option<&'a str>,
) -> Result<Option<Cow<'a, str>>, HostError> {
    let header = host_header
        .map(|bytes| {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(canonical_host)
                .ok_or(HostError::Invalid)
        })
        .transpose()?;
    let target = authority
        .map(|text| canonical_host(text).ok_or(HostError::Invalid))
        .transpose()?;
    match (header, target) {
        (Some(header), Some(target)) if header != target => Err(HostError::Disagree),
        (Some(header), _) => Ok(Some(header)),
        (None, target) => Ok(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn path(raw: &str, expected: Result<&str, PathError>) {
        assert_eq!(
            canonical_path(raw).as_deref().map_err(|e| *e),
            expected,
            "raw {raw:?}"
        );
    }

    #[test]
    fn a_format_suffix_is_read_off_the_last_segment_only() {
        assert_eq!(without_format("/admin.json"), Some("/admin"));
        assert_eq!(without_format("/admin/users.tar.gz"), Some("/admin/users"));
        assert_eq!(without_format("/a.b/c"), None);
        assert_eq!(without_format("/.well-known"), None);
        assert_eq!(without_format("/x/.hidden.txt"), Some("/x/.hidden"));
        assert_eq!(without_format("/"), None);
        assert_eq!(without_format("/admin."), Some("/admin"));
        assert_eq!(without_format("/admin.json/"), Some("/admin"));
        assert_eq!(without_format("/a/"), None);
    }

    #[test]
    fn paths_are_decoded_merged_and_resolved() {
        path("/public/x", Ok("/public/x"));
        path("/", Ok("/"));
        path("/admin?x=/public", Ok("/admin"));
        path("/admin#/public", Err(PathError::BadCharacter));
        path("/public/../admin", Ok("/admin"));
        path("/public/../admin/", Ok("/admin/"));
        path("/public/%2e%2e/admin", Ok("/admin"));
        path("/public/%2E%2e/admin", Ok("/admin"));
        path("/public/.%2e/admin", Ok("/admin"));
        path("/public/./../admin/", Ok("/admin/"));
        path("/public//../admin/", Err(PathError::EmptySegmentDots));
        path("/%70ublic/x", Ok("/public/x"));
        path("/a/./b/", Ok("/a/b/"));
        path("/a/b/..", Ok("/a/"));
        path("/a/b/.", Ok("/a/b/"));
        path("/a/..", Ok("/"));
        path("//api/x", Ok("/api/x"));
        path("///api/x", Ok("/api/x"));
        path("/.//api/x", Ok("/api/x"));
        path("/a//", Ok("/a/"));
        path("/caf%c3%a9", Ok("/caf%C3%A9"));
        path("/a%20b", Ok("/a%20b"));
        path("/.well-known/x", Ok("/.well-known/x"));
        path("/a/...", Ok("/a/..."));
        path("/public;/../admin", Ok("/admin"));
    }

    #[test]
    fn dot_segments_with_parameters_are_refused_and_other_readings_listed() {
        path("/public/..;/admin", Err(PathError::DotSegmentParameters));
        path("/public/..;x=1/admin", Err(PathError::DotSegmentParameters));
        path(
            "/public/%2e%2e;/admin",
            Err(PathError::DotSegmentParameters),
        );
        path("/public/.;/admin", Err(PathError::DotSegmentParameters));
        path("/public/...;/admin", Ok("/public/...;/admin"));
        // Encoded: an application that decodes before it drops parameters reads `..;`.
        path("/public/..%3B/admin", Err(PathError::DotSegmentParameters));
        path("/public/..%3b/admin", Err(PathError::DotSegmentParameters));
        path("/public/.%3Bx/admin", Err(PathError::DotSegmentParameters));
        path(
            "/public/%2e%2e%3b/admin",
            Err(PathError::DotSegmentParameters),
        );
        path("/public/..x%3B/admin", Ok("/public/..x%3B/admin"));
        // A segment that is only parameters: Tomcat merges it away, so the `..` after it
        // climbs out of `/public/` there and not here.
        path("/public/;/../admin", Err(PathError::EmptySegmentParameters));
        // An empty segment a `..` removes: `/x` merged first, `/admin/x` to an application
        // that does not merge slashes.
        path("/admin//../x", Err(PathError::EmptySegmentDots));
        path("/admin//./../x", Err(PathError::EmptySegmentDots));
        path("/admin//b/../../x", Err(PathError::EmptySegmentDots));
        path("/admin/%2E%2E//../x", Err(PathError::EmptySegmentDots));
        // Empty segments no `..` reaches read alike either way.
        path("/a//b", Ok("/a/b"));
        path("/a//b/../x", Ok("/a/x"));
        path("/a/b//", Ok("/a/b/"));
        path("/a/b/..//", Ok("/a/"));
        path(
            "/public/;x/../admin",
            Err(PathError::EmptySegmentParameters),
        );
        path(
            "/public/%3B/../admin",
            Err(PathError::EmptySegmentParameters),
        );
        path(
            "/public/%3bx=1/../admin",
            Err(PathError::EmptySegmentParameters),
        );
        path(
            "/public/;x/a/../../admin",
            Err(PathError::EmptySegmentParameters),
        );
        // Without a `..` after it, the segment is a name here and nothing to Tomcat, which
        // `other_readings` lists; Tomcat's session ids in URLs take this shape.
        path("/;/admin", Ok("/;/admin"));
        path("/app/;jsessionid=ABC", Ok("/app/;jsessionid=ABC"));
        path("/a/b/../;x/c", Ok("/a/;x/c"));
        assert_eq!(other_readings("/public/;x/admin"), ["/public/admin"]);
        // Encoded, the application decodes, drops the parameters and merges the slashes.
        assert!(other_readings("/%3Bx/admin").contains(&"/admin".to_owned()));
        assert_eq!(
            other_readings("/admin%3Bx/users"),
            ["/admin/users", "/admin;x/users"]
        );
        assert!(other_readings("/public/admin").is_empty());
        assert_eq!(other_readings("/admin;x/users"), ["/admin/users"]);
        assert_eq!(other_readings("/a/;x/b"), ["/a/b"]);
        assert_eq!(other_readings("/users/%40me"), ["/users/@me"]);
        assert_eq!(other_readings("/a;b/%40c"), ["/a/%40c", "/a/@c", "/a;b/@c"]);
        assert_eq!(other_readings("/%FF"), ["/\u{fffd}"]);
    }

    #[test]
    fn dot_segments_are_found_sent_or_encoded() {
        for path in [
            "/.",
            "/..",
            "/admin/../public/x",
            "/admin/./x",
            "/admin/%2e%2e/public",
            "/admin/.%2E/public",
            "/admin/%2E./public",
            "/admin/%2e/x",
            "/x/..",
            "/admin/x/..%2F..%2Fy",
            "/admin/%2e%2e%2fx",
            "/a/.%2F",
            "/a/%2E%2F",
        ] {
            assert!(holds_a_dot_segment(path), "{path}");
        }
        for path in [
            "/",
            "/app.js",
            "/a/.../b",
            "/a/..b/c",
            "/a/b../c",
            "/.well-known/x",
            "/a/%2e%2e%2e",
            "/a/%2f",
            "/a%2e",
            "/a/x.%2Fy",
            "/a/%2e%2e%2e%2fb",
            "/a/%25%2e",
            "",
        ] {
            assert!(!holds_a_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn paths_without_a_single_reading_are_refused() {
        path("/public%2F..%2Fadmin", Err(PathError::EncodedSeparator));
        path("/public%2f..%2fadmin", Err(PathError::EncodedSeparator));
        path("/public%5Cadmin", Err(PathError::EncodedSeparator));
        path("/public%3Fx", Err(PathError::EncodedSeparator));
        path("/public%23x", Err(PathError::EncodedSeparator));
        path("/public%252e%252e/admin", Err(PathError::EncodedSeparator));
        path("/public%00", Err(PathError::EncodedSeparator));
        path("/public%0d%0a", Err(PathError::EncodedSeparator));
        path("/public\\..\\admin", Err(PathError::BadCharacter));
        // nginx passes a raw `#` on in the path; an application may resolve what follows.
        path("/public/#/../../admin", Err(PathError::BadCharacter));
        path("/public/x?a=#b", Ok("/public/x"));
        path("/a b", Err(PathError::BadCharacter));
        path("/a\u{0}b", Err(PathError::BadCharacter));
        path("/café", Err(PathError::BadCharacter));
        path("/public%zz", Err(PathError::BadPercentEncoding));
        path("/public%2", Err(PathError::BadPercentEncoding));
        path("/public%", Err(PathError::BadPercentEncoding));
        path("relative", Err(PathError::NotAbsolute));
        path("", Err(PathError::NotAbsolute));
        path("/..", Err(PathError::AboveRoot));
        path("/../../etc", Err(PathError::AboveRoot));
        path("/a/../../etc", Err(PathError::AboveRoot));
        path("/%2e%2e/etc", Err(PathError::AboveRoot));
    }

    #[test]
    fn canonical_paths_are_fixed_points() {
        for raw in ["/a//b/../c/./d%2e/", "/%41%7e%c3/x/..", "//", "/x/%2E/y"] {
            let once = canonical_path(raw).unwrap().into_owned();
            assert_eq!(canonical_path(&once).unwrap(), once, "{raw}");
        }
    }

    #[test]
    fn hosts_lose_case_port_and_one_trailing_dot() {
        let host = |value: &str| canonical_host(value).map(Cow::into_owned);
        // DNS's limits: a label of 63 bytes, a name of 253.
        let label = "a".repeat(63);
        assert!(host(&format!("{label}.example")).is_some());
        assert_eq!(host(&format!("{label}b.example")), None);
        let name = format!("{label}.{label}.{label}.{}", "a".repeat(61));
        assert_eq!(name.len(), 253);
        assert!(host(&name).is_some());
        assert_eq!(host(&format!("{name}a")), None);
        assert_eq!(
            host("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]").as_deref(),
            Some("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
        );
        assert_eq!(host(&format!("[{}]", "1:".repeat(30_000))), None);
        assert_eq!(host("App.Example.com").as_deref(), Some("app.example.com"));
        assert_eq!(host("app.example.com.").as_deref(), Some("app.example.com"));
        assert_eq!(
            host("app.example.com:443").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            host("APP.example.com.:8443").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(host("[::1]:4180").as_deref(), Some("::1"));
        assert_eq!(host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        for bad in [
            "",
            ".",
            "app.example.com..",
            "a..b",
            "app.example.com:x",
            "app.example.com:",
            "a b",
            "evil.com/x",
            "user@host",
            "[::1",
            "[::1]x",
            "[]",
            "::1",
            ".app.example.com",
            "app..example.com:443",
            "app.example.com...",
            "app.exämple.com",
            "app.example.com\u{0}",
            // Numbers a URL parser reads as an IPv4 address the text is not.
            "10.5",
            "10.0.5",
            "0x0a000005",
            "0X0A.0.0.5",
            "012.0.0.5",
            "167772165",
            "app.example.0x1",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        assert_eq!(host("10.0.0.5:80").as_deref(), Some("10.0.0.5"));
        assert_eq!(host("255.0.10.100").as_deref(), Some("255.0.10.100"));
        for bad in ["256.0.0.1", "1.2.3.4.5", "1.2.3.04", "1.2.3.", "1..2.3"] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        assert_eq!(host("10.0.0.5.").as_deref(), Some("10.0.0.5"));
        assert_eq!(host("0x.example.com").as_deref(), Some("0x.example.com"));
        assert_eq!(host("a-b_c.d9").as_deref(), Some("a-b_c.d9"));
        assert_eq!(host("x").as_deref(), Some("x"));
    }

    /// The byte-by-byte reading of a dotted quad agrees with the standard library's parser
    /// and formatter: an address that is its own canonical text, and nothing else.
    #[test]
    fn a_dotted_quad_is_an_address_written_as_its_canonical_text() {
        let reference = |name: &str| {
            name.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|address| address.to_string() == name)
        };
        for name in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "01.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4a",
            "1000.0.0.1",
            "10.0.0.00",
            "",
        ] {
            assert_eq!(is_dotted_quad(name), reference(name), "{name:?}");
        }
        // Random strings of digits and dots, from a fixed seed.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"0123456789.";
        for _ in 0..200_000 {
            let length = 1 + usize::try_from(next() % 16).unwrap();
            let name: String = (0..length)
                .map(|_| {
                    let pick = usize::try_from(next() % 13).unwrap();
                    // Dots more often (three picks in thirteen), so that many are near a quad.
                    char::from(alphabet[pick.min(10)])
                })
                .collect();
            assert_eq!(is_dotted_quad(&name), reference(&name), "{name:?}");
        }
    }

    #[test]
    fn host_header_and_target_must_agree() {
        assert_eq!(
            request_host(Some(b"App.Example.com."), Some("app.example.com:443"))
                .unwrap()
                .as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            request_host(Some(b"app.example.com"), Some("other.example.com")),
            Err(HostError::Disagree)
        );
        assert_eq!(request_host(Some(b"a b"), None), Err(HostError::Invalid));
        assert_eq!(request_host(None, None), Ok(None));
        assert_eq!(
            request_host(None, Some("x.example")).unwrap().as_deref(),
            Some("x.example")
        );
    }

    #[test]
    fn a_dot_segment_that_removes_an_empty_one_is_found_whatever_else_is_encoded() {
        for path in [
            "/admin//../users",
            "/admin//../users%2Fx",
            "/admin//%2E%2E/users",
            "/admin//%2e./users%25",
            "/a//b/../../c",
            // An earlier `..` above the root hides nothing; an empty segment encoded.
            "/../admin//../public/x",
            "/admin/%2F/../users",
        ] {
            assert!(removes_an_empty_segment(path), "{path}");
        }
        for path in [
            "/admin/../users",
            "/admin//users",
            "/admin/%2e%2e/x%2F",
            "/",
        ] {
            assert!(!removes_an_empty_segment(path), "{path}");
        }
    }
}
