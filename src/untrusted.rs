//! Text from outside (a token header, a provider's answer, a query) on its way into a log line
//! or an error message: at most `MAX_CHARS` characters, control and bidirectional-formatting
//! characters escaped, so an attacker can neither flood the log nor forge a line of it.

/// The most characters of untrusted text a log line or error message carries (escapes
/// included).
pub const MAX_CHARS: usize = 64;

/// The most bytes of a refusal's reason a log line or a span carries: reasons are the code's
/// own words around bounded quotes of what came in; one longer than this is cut wherever it
/// came from.
pub const REASON_MOST: usize = 1024;

/// The longest start of `text` of at most `most` bytes that ends on a character boundary.
pub fn cut(text: &str, most: usize) -> &str {
    if text.len() <= most {
        return text;
    }
    let mut end = most;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// `text` cut to `MAX_CHARS` characters (an ellipsis marks the cut), with control characters
/// and bidirectional overrides escaped as `\u{…}`.
pub fn bounded(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 2));
    // Writing to a `String` cannot fail.
    let _ = write_bounded(text, &mut out);
    out
}

/// `bounded(text)` written to `out`, without building a `String` (the decision log line).
///
/// # Errors
/// Only `out`'s own.
pub fn write_bounded(text: &str, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    // Most text is short and plain: written as it is.
    if text.len() <= MAX_CHARS && text.bytes().all(|byte| (b' '..0x7f).contains(&byte)) {
        return out.write_str(text);
    }
    let mut written = 0;
    for character in text.chars() {
        let escaped = is_unsafe(character).then(|| character.escape_unicode());
        let width = escaped.clone().map_or(1, Iterator::count);
        if written + width > MAX_CHARS {
            return out.write_char('…');
        }
        written += width;
        match escaped {
            Some(escaped) => {
                for part in escaped {
                    out.write_char(part)?;
                }
            }
            None => out.write_char(character)?,
        }
    }
    Ok(())
}

/// Whether `character` is escaped in a log line: a control character, or a bidirectional or
/// invisible formatting one (the soft hyphen, the combining grapheme joiner, the Arabic letter
/// mark, the Hangul and Khmer fillers, the Mongolian free variation selectors and vowel
/// separator, the zero-width and directional marks, the word joiner and invisible operators,
/// the deprecated format characters, the variation selectors, the byte-order mark, the
/// interlinear annotation characters, the shorthand and musical format controls, the tags, the
/// other format characters of Arabic, Syriac, Kaithi and Egyptian hieroglyphs, the blank
/// Braille pattern). A `skip-auth-ne` pattern holding one is refused too
/// (`policy::auth_query`): it matches no path a client means.
pub fn is_unsafe(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061c}'
                | '\u{06dd}'
                | '\u{070f}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08e2}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// `text` as an OAuth `error_description` may carry it (RFC 6749 §5.2: printable ASCII but
/// `"` and `\`): every other character, an escape's backslash included, becomes `?`. The
/// description quotes what a request sent (a repeated parameter's name), which may hold any.
pub fn oauth_description(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            ' ' | '!' | '#'..='[' | ']'..='~' => character,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oauth_description_holds_only_what_rfc_6749_allows() {
        assert_eq!(
            oauth_description("parameter `scope` repeated"),
            "parameter `scope` repeated"
        );
        assert_eq!(oauth_description("a\"b\\c\u{e9}\n\u{202e}"), "a?b?c???");
    }

    #[test]
    fn long_text_is_cut_and_control_characters_are_escaped() {
        let long = "k".repeat(64 * 1024);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("kid-1"), "kid-1");
        assert_eq!(bounded(&"é".repeat(MAX_CHARS)), "é".repeat(MAX_CHARS));
        let forged = bounded("x\r\n2026-12-01 INFO forged line\u{202e}\0");
        assert!(!forged.contains(['\r', '\n', '\0', '\u{202e}']), "{forged}");
        assert!(forged.starts_with("x\\u{d}\\u{a}2026"), "{forged}");
        let hidden = bounded("a\u{061c}b\u{feff}c\u{2060}d\u{180e}e\u{ad}f\u{e0041}");
        assert_eq!(
            hidden,
            "a\\u{61c}b\\u{feff}c\\u{2060}d\\u{180e}e\\u{ad}f\\u{e0041}"
        );
        let newlines = bounded(&"\n".repeat(1000));
        assert!(newlines.chars().count() <= MAX_CHARS + 1, "{newlines}");
    }
}
