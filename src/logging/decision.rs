//! The decision line (SPEC §11), one per request: written by hand into a buffer of the
//! request's thread and handed to the log queue, not through `tracing`'s generic formatter,
//! which cost a cached `/auth` about as many instructions as the rest of the request. Same
//! JSON and text layout as the other lines (`timestamp`, `level`, `message`, the fields,
//! `target`); every value is escaped, so a line stays one line whatever a client sent. Every
//! other event still goes through `tracing`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Level;

/// One request's decision, as its log line carries it. Never a token, never a query string.
#[derive(Clone, Copy, Default)]
pub struct Decision<'a> {
    /// `forward_auth`, `validate`, `proxy`, `token_service`, `admin`, …
    pub role: &'static str,
    /// How a forward-auth decision was asked for: `auth`, `envoy_http`, `envoy_grpc`.
    pub via: Option<&'static str>,
    /// The proxy's route: its host (or "") and its path prefix, written as one value.
    pub route: Option<(&'a str, &'a str)>,
    /// `allow`, `skip`, `unauthenticated`, `forbidden`, …
    pub result: &'static str,
    /// The credential that authenticated the request: `session`, `bearer`, `token_cookie`.
    pub credential: Option<&'static str>,
    /// Why it was refused, for the operator.
    pub reason: Option<&'a dyn fmt::Display>,
    /// The original request's path, the client's text: its query and fragment are cut off
    /// here (a query can carry `code=` or `access_token=`), the rest bounded and escaped.
    pub path: Option<&'a str>,
    /// The request's `X-Request-Id`, the client's text: bounded and escaped.
    pub request_id: Option<&'a str>,
}

/// Logs one decision at `info` (or `warn`) when that level is enabled for the calling module
/// (`TOLLGATE_LOG`), as a `tracing` event would be.
#[macro_export]
macro_rules! log_decision {
    (info, $decision:expr) => {{
        static ENABLED: $crate::logging::decision::Enabled =
            $crate::logging::decision::Enabled::new();
        if ENABLED.get(|| ::tracing::enabled!(::tracing::Level::INFO)) {
            $crate::logging::decision::write(::tracing::Level::INFO, module_path!(), &$decision);
        }
    }};
    (warn, $decision:expr) => {{
        static ENABLED: $crate::logging::decision::Enabled =
            $crate::logging::decision::Enabled::new();
        if ENABLED.get(|| ::tracing::enabled!(::tracing::Level::WARN)) {
            $crate::logging::decision::write(::tracing::Level::WARN, module_path!(), &$decision);
        }
    }};
}

/// Whether one `log_decision!` call site's level is enabled, asked of `tracing` once and then
/// remembered — when that is sound: `logging::init` ran (the filter is then fixed for the
/// process's life) and its filter has no directive that depends on the current span (a `[`).
/// Otherwise asked every time. `tracing::enabled!` asks the subscriber on every call (about
/// 140 instructions a line, half a percent of a cached `/auth`), where an event's own
/// call site remembers.
pub struct Enabled(AtomicU8);

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Set by `logging::init` when call sites may remember their answer.
pub(super) static REMEMBERED: AtomicBool = AtomicBool::new(false);

impl Enabled {
    /// Not asked yet.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self(AtomicU8::new(UNKNOWN))
    }

    /// The remembered answer, or `ask`'s.
    pub fn get(&self, ask: impl FnOnce() -> bool) -> bool {
        self.get_or_ask(REMEMBERED.load(Ordering::Relaxed), ask)
    }

    /// `get`, remembering only when `remember`.
    fn get_or_ask(&self, remember: bool, ask: impl FnOnce() -> bool) -> bool {
        if !remember {
            return ask();
        }
        match self.0.load(Ordering::Relaxed) {
            ON => true,
            OFF => false,
            _ => {
                let enabled = ask();
                self.0
                    .store(if enabled { ON } else { OFF }, Ordering::Relaxed);
                enabled
            }
        }
    }
}

/// How decision lines are written once `logging::init` ran.
pub(super) struct Sink {
    pub(super) json: bool,
}

pub(super) static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

thread_local! {
    /// The thread's clock: its last whole second, formatted.
    static CLOCK: RefCell<Clock> = RefCell::new(Clock::default());
}

/// Writes `decision`'s line (called by `log_decision!`, which checked the level) into the log
/// queue. Before `logging::init` (a test, a library user) it goes out as a plain `tracing`
/// event. `target` is the calling module's path (`module_path!`): identifiers and `::`,
/// written as it is.
pub fn write(level: Level, target: &'static str, decision: &Decision<'_>) {
    let queued = SINK.get().is_some_and(|sink| {
        CLOCK
            .try_with(|clock| {
                let Ok(mut clock) = clock.try_borrow_mut() else {
                    return true;
                };
                // A log line's time is the wall clock's, as `tracing-subscriber`'s are; no
                // decision depends on it.
                #[allow(clippy::disallowed_methods)]
                let now = SystemTime::now();
                super::queue::line(|line| {
                    format_line(line, &mut clock, now, level, target, decision, sink.json);
                })
            })
            .unwrap_or(false)
    });
    if queued {
        return;
    }
    let mut fields = Vec::new();
    write_fields(&mut fields, decision, false);
    let fields = String::from_utf8_lossy(&fields);
    if level == Level::WARN {
        tracing::warn!(target: "tollgate::decision", "decision {fields}");
    } else {
        tracing::info!(target: "tollgate::decision", "decision {fields}");
    }
}

/// One whole line, newline included, into `line`.
fn format_line(
    line: &mut Vec<u8>,
    clock: &mut Clock,
    now: SystemTime,
    level: Level,
    target: &'static str,
    decision: &Decision<'_>,
    json: bool,
) {
    let warn = level == Level::WARN;
    let mut out = Line(line);
    if json {
        out.raw("{\"timestamp\":\"");
        clock.write(now, out.0);
        out.raw(if warn {
            "\",\"level\":\"WARN\",\"message\":\"decision\""
        } else {
            "\",\"level\":\"INFO\",\"message\":\"decision\""
        });
    } else {
        clock.write(now, out.0);
        out.raw(if warn { "  WARN " } else { "  INFO " });
        out.raw(target);
        out.raw(": decision");
    }
    write_fields(out.0, decision, json);
    if json {
        out.raw(",\"target\":\"");
        out.raw(target);
        out.raw("\"}\n");
    } else {
        out.raw("\n");
    }
}

/// The fields of a decision, each as `,"name":"value"` (JSON) or ` name="value"` (text).
fn write_fields(buffer: &mut Vec<u8>, decision: &Decision<'_>, json: bool) {
    // `opening` is a field's text up to its value's first character, `[text, json]`: one
    // copy where the separator, the name and the quote were three.
    let mut field = |opening: [&str; 2], value: &dyn Fn(&mut Escaped<'_>) -> fmt::Result| {
        buffer.extend_from_slice(opening[usize::from(json)].as_bytes());
        // Writing into a `Vec` fails only if a `Display` of the reason does.
        let _ = value(&mut Escaped {
            out: &mut *buffer,
            json,
        });
        buffer.push(b'"');
    };
    // `role`, `via`, `result` and `credential` are the code's own words (`&'static str`):
    // written as they are, in the same shape.
    field([" role=\"", ",\"role\":\""], &|out| out.raw(decision.role));
    if let Some(via) = decision.via {
        field([" via=\"", ",\"via\":\""], &|out| out.raw(via));
    }
    if let Some((host, prefix)) = decision.route {
        field([" route=\"", ",\"route\":\""], &|out| {
            out.write_str(host)?;
            out.write_str(prefix)
        });
    }
    field([" result=\"", ",\"result\":\""], &|out| {
        out.raw(decision.result)
    });
    if let Some(credential) = decision.credential {
        field([" credential=\"", ",\"credential\":\""], &|out| {
            out.raw(credential)
        });
    }
    if let Some(reason) = decision.reason {
        field([" reason=\"", ",\"reason\":\""], &|out| {
            let mut capped = Capped {
                out,
                left: crate::untrusted::REASON_MOST,
                cut: false,
            };
            write!(capped, "{reason}")?;
            if capped.cut {
                capped.out.write_str("…")?;
            }
            Ok(())
        });
    }
    if let Some(path) = decision.path {
        let path = loggable_path(path);
        field([" path=\"", ",\"path\":\""], &|out| {
            crate::untrusted::write_bounded(&path, out)
        });
    }
    if let Some(id) = decision.request_id {
        field([" request_id=\"", ",\"request_id\":\""], &|out| {
            crate::untrusted::write_bounded(id, out)
        });
    }
}

/// `path` as a log line or span may hold it: without its query and fragment, and each path
/// parameter's value (`;jsessionid=…`, a Java servlet's session id rewritten into the URL)
/// written `;…`. Either may carry a credential.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    let path = match memchr::memchr2(b'?', b'#', path.as_bytes()) {
        Some(end) => path.get(..end).unwrap_or_default(),
        None => path,
    };
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut shown = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            shown.push('/');
        }
        match segment.split_once(';') {
            Some((name, _)) => {
                shown.push_str(name);
                shown.push_str(";…");
            }
            None => shown.push_str(segment),
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// The line being written.
struct Line<'b>(&'b mut Vec<u8>);

impl Line<'_> {
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }
}

impl fmt::Write for Line<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.raw(text);
        Ok(())
    }
}

/// Writes text inside a quoted value: JSON's escapes (RFC 8259 §7: `"`, `\` and control
/// characters), or in text `"`, `\` and the control and bidirectional-formatting characters
/// `untrusted` escapes, as `\u{…}`.
struct Escaped<'b> {
    out: &'b mut Vec<u8>,
    json: bool,
}

impl Escaped<'_> {
    /// Text known to need no escape (the code's own words).
    fn raw(&mut self, text: &'static str) -> fmt::Result {
        debug_assert!(
            text.bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
        );
        self.out.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// A reason written at most `left` bytes long (`untrusted::REASON_MOST`): a reason that
/// quotes what came in whole (a 60 KB `/auth` parameter) would otherwise be a line as long,
/// and the queue of lines is bounded by count, not size.
struct Capped<'a, 'b> {
    out: &'a mut Escaped<'b>,
    left: usize,
    cut: bool,
}

impl fmt::Write for Capped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let kept = crate::untrusted::cut(text, self.left);
        self.cut = kept.len() < text.len();
        self.left -= kept.len();
        self.out.write_str(kept)
    }
}

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        // Most values need no escape: found in one pass that the compiler can vectorise (no
        // early exit), then copied whole.
        let plain = bytes.iter().fold(true, |plain, &byte| {
            plain
                & (byte >= 0x20)
                & (byte != b'"')
                & (byte != b'\\')
                & (byte != 0x7f)
                & (byte < 0x80)
        });
        if plain {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        let mut start = 0;
        for (index, &byte) in bytes.iter().enumerate() {
            let plain = match byte {
                b'"' | b'\\' => false,
                0..0x20 | 0x7f => false,
                // A multi-byte character: text mode escapes the C1 controls (their first byte
                // is 0xC2) and the bidirectional and invisible formatting characters (U+00AD:
                // 0xC2, U+034F: 0xCD, U+0600… U+061C: 0xD8, U+06DD: 0xDB, U+070F: 0xDC,
                // U+0890… U+08E2: 0xE0, U+115F… U+180E: 0xE1, U+200B… U+2800: 0xE2, U+3164:
                // 0xE3, U+FE00… U+FFFB: 0xEF, U+110BD… U+1D17A: 0xF0, the tags and variation
                // selectors U+E0000…: 0xF3), as `untrusted::is_unsafe` lists them.
                0xc2 | 0xcd | 0xd8 | 0xdb | 0xdc | 0xe0 | 0xe1 | 0xe2 | 0xe3 | 0xef | 0xf0
                | 0xf3 => self.json,
                _ => true,
            };
            if plain {
                continue;
            }
            self.out
                .extend_from_slice(bytes.get(start..index).unwrap_or_default());
            start = index + 1;
            match byte {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                0xc2 | 0xcd | 0xd8 | 0xdb | 0xdc | 0xe0 | 0xe1 | 0xe2 | 0xe3 | 0xef | 0xf0
                | 0xf3 => {
                    // Text mode: escaped when unsafe.
                    let character = text
                        .get(index..)
                        .and_then(|rest| rest.chars().next())
                        .unwrap_or_default();
                    let length = character.len_utf8();
                    if crate::untrusted::is_unsafe(character) {
                        let _ = write!(Line(self.out), "{}", character.escape_unicode());
                    } else {
                        self.out.extend_from_slice(
                            bytes.get(index..index + length).unwrap_or_default(),
                        );
                    }
                    start = index + length;
                }
                _ if self.json => {
                    let _ = write!(Line(self.out), "\\u{byte:04x}");
                }
                _ => {
                    let _ = write!(Line(self.out), "\\u{{{byte:x}}}");
                }
            }
        }
        self.out
            .extend_from_slice(bytes.get(start..).unwrap_or_default());
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of the last whole second a line was written in, so that a line
/// formats only its microseconds (`tracing-subscriber`'s timestamps: UTC, microseconds, `Z`).
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    prefix: Vec<u8>,
}

impl Clock {
    fn write(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            self.prefix.clear();
            let (year, month, day) = civil_date(second / 86_400);
            let of_day = second % 86_400;
            let _ = write!(
                Line(&mut self.prefix),
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60
            );
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        let micros = since.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut rest = micros;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01 (days from civil, inverted: eras of
/// 400 years, years starting in March so that the leap day ends them).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
