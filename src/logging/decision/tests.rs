//! The decision line: the layout `tracing-subscriber` gives other lines, every field, escaping
//! that keeps a line one line (checked over generated text), no query string, the timestamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::Level;

use super::{Clock, Decision, Enabled, format_line};

fn line(decision: &Decision<'_>, json: bool, level: Level, now: SystemTime) -> String {
    let mut out = Vec::new();
    format_line(
        &mut out,
        &mut Clock::default(),
        now,
        level,
        "tollgate::forward_auth",
        decision,
        json,
    );
    String::from_utf8(out).unwrap()
}

fn every_field<'a>(reason: &'a dyn std::fmt::Display, path: &'a str) -> Decision<'a> {
    Decision {
        role: "proxy",
        via: Some("auth"),
        route: Some(("app.example.com", "/api")),
        result: "forbidden",
        credential: Some("session"),
        reason: Some(reason),
        path: Some(path),
        request_id: Some("4f1c9a"),
    }
}

/// Undoes the text format's escapes of one quoted value.
fn unescape_text(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(character) = chars.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                assert_eq!(chars.next(), Some('{'));
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => out.push(other),
        }
    }
    out
}

/// The text line's fields, name to unescaped value, in order.
fn text_fields(line: &str) -> Vec<(String, String)> {
    let (_, fields) = line.split_once(": decision").unwrap();
    let mut rest = fields.strip_suffix('\n').unwrap();
    let mut found = Vec::new();
    while let Some(after_space) = rest.strip_prefix(' ') {
        let (name, value) = after_space.split_once("=\"").unwrap();
        // The value ends at the first quote not escaped.
        let mut end = None;
        let mut escaped = false;
        for (index, character) in value.char_indices() {
            match character {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let end = end.unwrap();
        found.push((name.to_owned(), unescape_text(&value[..end])));
        rest = &value[end + 1..];
    }
    assert!(rest.is_empty(), "{line}");
    found
}

#[test]
fn json_line_is_laid_out_as_tracing_subscriber_lays_out_the_others() {
    // What `tracing-subscriber` writes for the same event, as the decision line was before.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            target: "tollgate::forward_auth",
            role = "forward_auth",
            via = "auth",
            result = "allow",
            credential = "bearer",
            path = "/a\"b",
            "decision"
        );
    });
    let theirs: Value = serde_json::from_slice(captured.0.lock().unwrap().as_slice()).unwrap();
    let decision = Decision {
        role: "forward_auth",
        via: Some("auth"),
        result: "allow",
        credential: Some("bearer"),
        path: Some("/a\"b"),
        ..Decision::default()
    };
    let ours = line(&decision, true, Level::INFO, fixed_now());
    let ours_value: Value = serde_json::from_str(&ours).unwrap();
    let keys =
        |value: &Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
    // The same keys in the same order (serde_json keeps them sorted; the raw text is checked
    // for order below), the same values but the timestamp.
    assert_eq!(keys(&ours_value), keys(&theirs));
    for key in keys(&theirs).iter().filter(|key| *key != "timestamp") {
        assert_eq!(ours_value[key], theirs[key], "{key}");
    }
    assert!(
        ours.starts_with("{\"timestamp\":\"") && ours.contains("\",\"level\":\"INFO\",\"message\":\"decision\",\"role\":\"forward_auth\",\"via\":\"auth\",\"result\":\"allow\",\"credential\":\"bearer\",\"path\":\"/a\\\"b\",\"target\":\"tollgate::forward_auth\"}\n"),
        "{ours}"
    );
    assert_eq!(ours.matches('\n').count(), 1);
}

#[test]
fn text_line_has_the_prefix_of_the_other_lines_and_every_field_quoted() {
    let now = UNIX_EPOCH + Duration::from_micros(1_796_171_863_360_922);
    let reason = "bearer refused: expired";
    let info = line(&every_field(&reason, "/x"), false, Level::INFO, now);
    assert_eq!(
        info,
        "2026-12-02T00:37:43.360922Z  INFO tollgate::forward_auth: decision role=\"proxy\" \
         via=\"auth\" route=\"app.example.com/api\" result=\"forbidden\" credential=\"session\" \
         reason=\"bearer refused: expired\" path=\"/x\" request_id=\"4f1c9a\"\n"
    );
    let warn = line(&every_field(&reason, "/x"), false, Level::WARN, now);
    assert!(
        warn.starts_with(
            "2026-12-02T00:37:43.360922Z  WARN tollgate::forward_auth: decision role="
        ),
        "{warn}"
    );
    let json: Value =
        serde_json::from_str(&line(&every_field(&reason, "/x"), true, Level::WARN, now)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "timestamp": "2026-12-02T00:37:43.360922Z", "level": "WARN", "message": "decision",
            "role": "proxy", "via": "auth", "route": "app.example.com/api", "result": "forbidden",
            "credential": "session", "reason": "bearer refused: expired", "path": "/x",
            "request_id": "4f1c9a", "target": "tollgate::forward_auth",
        })
    );
}

#[test]
fn no_query_string_or_fragment_is_logged() {
    let path = "/cb?code=SECRET-CODE&access_token=SECRET-TOKEN#id_token=SECRET-ID";
    for json in [true, false] {
        let written = line(&every_field(&"r", path), json, Level::INFO, fixed_now());
        assert!(!written.contains("SECRET"), "{written}");
        assert!(
            !written.contains('?') && !written.contains('#'),
            "{written}"
        );
        assert!(written.contains(if json {
            "\"path\":\"/cb\""
        } else {
            "path=\"/cb\""
        }));
    }
}

/// A path parameter's value may be a credential (`;jsessionid=`, a Java servlet's session id
/// rewritten into the URL): each is written `;…`, the segments kept.
#[test]
fn no_path_parameter_value_is_logged() {
    let path = "/shop;jsessionid=SECRET-SESSION/cart;v=SECRET-2/x?q=1";
    for json in [true, false] {
        let written = line(&every_field(&"r", path), json, Level::INFO, fixed_now());
        assert!(!written.contains("SECRET"), "{written}");
        assert!(written.contains("/shop;…/cart;…/x"), "{written}");
    }
    assert_eq!(super::loggable_path("/a/b"), "/a/b");
    assert_eq!(super::loggable_path("/a;/b;x"), "/a;…/b;…");
}

#[test]
fn quotes_newlines_and_control_characters_are_escaped() {
    let reason = "a \"quoted\" \\ back\r\nslash\t\u{0}\u{1b}[31m\u{7f}\u{85}\u{202e}é✓";
    let path = "/p\"\n\u{202e}";
    let json = line(&every_field(&reason, path), true, Level::INFO, fixed_now());
    assert_eq!(json.matches('\n').count(), 1, "{json}");
    assert!(
        json.contains(r#""reason":"a \"quoted\" \\ back\r\nslash\t\u0000\u001b[31m\u007f"#),
        "{json}"
    );
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["reason"], reason);
    assert_eq!(parsed["path"], crate::untrusted::bounded(path));
    let text = line(&every_field(&reason, path), false, Level::INFO, fixed_now());
    assert_eq!(text.matches('\n').count(), 1, "{text}");
    assert!(
        !text.contains(['\r', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{202e}']),
        "{text}"
    );
    assert!(
        text.contains(
            r#"reason="a \"quoted\" \\ back\r\nslash\t\u{0}\u{1b}[31m\u{7f}\u{85}\u{202e}é✓""#
        ),
        "{text}"
    );
    let fields = text_fields(&text);
    assert_eq!(fields[5], ("reason".to_owned(), reason.to_owned()));
    assert_eq!(
        fields[6],
        ("path".to_owned(), crate::untrusted::bounded(path))
    );
}

/// Generated text of every awkward kind, in both formats: the line is one line, parses back to
/// the same values, and carries every field.
#[test]
fn generated_values_round_trip_in_both_formats() {
    const ALPHABET: &[char] = &[
        'a',
        'Z',
        '0',
        ' ',
        '"',
        '\\',
        '\n',
        '\r',
        '\t',
        '\0',
        '\u{1}',
        '\u{1f}',
        '\u{7f}',
        '\u{80}',
        '\u{9f}',
        '\u{a0}',
        'é',
        '\u{200b}',
        '\u{2028}',
        '\u{202e}',
        '\u{2066}',
        '\u{2070}',
        '✓',
        '\u{fffd}',
        '😀',
        '=',
        '?',
        '#',
        '{',
        '}',
        ':',
        ',',
        '\u{061c}',
        '\u{180e}',
        '\u{2060}',
        '\u{2064}',
        '\u{feff}',
        '\u{0600}',
        '\u{1800}',
        '\u{fe00}',
        '\u{00ad}',
        '\u{034f}',
        '\u{115f}',
        '\u{17b4}',
        '\u{206a}',
        '\u{3164}',
        '\u{ffa0}',
        '\u{fffa}',
        '\u{e0041}',
        '\u{e007f}',
        '\u{1f600}',
        '\u{3000}',
        '\u{180c}',
        '\u{fe0f}',
        '\u{1bca1}',
        '\u{1d175}',
        '\u{06dd}',
        '\u{070f}',
        '\u{0890}',
        '\u{08e2}',
        '\u{2800}',
        '\u{110bd}',
        '\u{13430}',
        '\u{e0100}',
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    for _ in 0..2000 {
        let mut text = || -> String {
            let length = next(90);
            (0..length)
                .map(|_| ALPHABET[next(ALPHABET.len())])
                .collect()
        };
        let (reason, path, request_id) = (text(), text(), text());
        let decision = Decision {
            reason: Some(&reason),
            path: Some(&path),
            request_id: Some(&request_id),
            ..every_field(&"", "")
        };
        let expected_path = crate::untrusted::bounded(&super::loggable_path(&path));
        let expected_id = crate::untrusted::bounded(&request_id);

        let json = line(&decision, true, Level::INFO, fixed_now());
        assert!(
            json.ends_with('\n') && json.matches('\n').count() == 1,
            "{json:?}"
        );
        let parsed: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json:?}"));
        assert_eq!(parsed["reason"], reason.as_str());
        assert_eq!(parsed["path"], expected_path.as_str());
        assert_eq!(parsed["request_id"], expected_id.as_str());
        for field in ["role", "via", "route", "result", "credential"] {
            assert!(parsed[field].is_string(), "{field}: {json}");
        }

        let text = line(&decision, false, Level::INFO, fixed_now());
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
        assert!(
            !text
                .trim_end_matches('\n')
                .chars()
                .any(crate::untrusted::is_unsafe),
            "{text:?}"
        );
        let fields = text_fields(&text);
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "role",
                "via",
                "route",
                "result",
                "credential",
                "reason",
                "path",
                "request_id"
            ]
        );
        assert_eq!(fields[5].1, reason);
        assert_eq!(fields[6].1, expected_path);
        assert_eq!(fields[7].1, expected_id);
    }
}

#[test]
fn timestamps_are_utc_rfc_3339_with_microseconds() {
    let mut clock = Clock::default();
    let mut state: u64 = 88_172_645_463_325_252;
    let mut times: Vec<u64> = vec![
        0,
        951_782_400_000_001,
        4_102_444_799_999_999,
        1_796_171_863_360_922,
    ];
    for _ in 0..5000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Any microsecond from 1970 to 2100.
        times.push(state % 4_102_444_800_000_000);
    }
    for micros in times {
        let now = UNIX_EPOCH + Duration::from_micros(micros);
        let mut ours = Vec::new();
        clock.write(now, &mut ours);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            humantime::format_rfc3339_micros(now).to_string(),
            "{micros}"
        );
        // Again within the same second: from the cached prefix.
        let mut again = Vec::new();
        let later =
            now + Duration::from_micros(1).min(Duration::from_micros(999_999 - micros % 1_000_000));
        clock.write(later, &mut again);
        assert_eq!(
            String::from_utf8(again).unwrap(),
            humantime::format_rfc3339_micros(later).to_string()
        );
    }
}

/// A moment of 2 December 2026.
fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_796_171_863_360_922)
}

/// A call site asks `tracing` once when it may remember (after `logging::init`, no span
/// directive), every time otherwise; and remembers either answer.
#[test]
fn a_call_site_remembers_whether_its_level_is_enabled_only_when_it_may() {
    for answer in [true, false] {
        let asked = std::cell::Cell::new(0);
        let ask = || {
            asked.set(asked.get() + 1);
            answer
        };
        let remembering = Enabled::new();
        for _ in 0..3 {
            assert_eq!(remembering.get_or_ask(true, ask), answer);
        }
        assert_eq!(asked.get(), 1, "asked once, then remembered");
        let asking = Enabled::new();
        for _ in 0..3 {
            assert_eq!(asking.get_or_ask(false, ask), answer);
        }
        assert_eq!(asked.get(), 4, "asked every time");
    }
}

#[test]
fn a_reason_longer_than_a_kilobyte_is_cut_on_a_character_boundary() {
    // Multi-byte characters, so the cut falls inside one unless it is moved to a boundary.
    let reason = "é".repeat(3000);
    for json in [true, false] {
        let written = line(&every_field(&reason, "/x"), json, Level::INFO, fixed_now());
        let value = if json {
            let parsed: Value = serde_json::from_str(written.trim_end()).unwrap();
            parsed["reason"].as_str().unwrap().to_owned()
        } else {
            text_fields(&written)
                .into_iter()
                .find(|(name, _)| name == "reason")
                .unwrap()
                .1
        };
        assert!(value.ends_with('…'), "{json}: {}", value.len());
        assert!(
            value.len() <= crate::untrusted::REASON_MOST + '…'.len_utf8(),
            "{json}: {} bytes",
            value.len()
        );
        assert!(value.starts_with("éé"));
    }
    let short = line(
        &every_field(&"no credential", "/x"),
        true,
        Level::INFO,
        fixed_now(),
    );
    assert!(short.contains("\"reason\":\"no credential\""), "{short}");
}
