//! A session as the `memory` store keeps it: tokens as their decoded bytes (a quarter smaller
//! than base64url text) and claims not repeated when they are the ID token's own. Expanding
//! gives back exactly the session that was stored; anything that would not come back
//! byte for byte (a token that is not canonical base64url segments, claims that differ from
//! the ID token's in ways an overlay cannot say) is kept as it is instead.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::Session;
use crate::clock::UnixTime;

/// Most dot-separated segments a token may have to be kept decoded (a JWE has five).
const MAX_SEGMENTS: usize = 8;

/// A token: decoded segments, or its text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// One byte of segment count, a little-endian `u16` length per segment, then the bytes.
    Segments(Box<[u8]>),
    Text(Box<str>),
}

impl Token {
    fn new(text: &str) -> Self {
        Self::decode(text).unwrap_or_else(|| Self::Text(text.into()))
    }

    fn decode(text: &str) -> Option<Self> {
        let mut decoded = Vec::new();
        for segment in text.split('.') {
            let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
            // Only canonical encodings: the text must come back exactly.
            if URL_SAFE_NO_PAD.encode(&bytes) != segment {
                return None;
            }
            decoded.push(bytes);
        }
        Self::from_segments(&decoded)
    }

    fn from_segments<S: AsRef<[u8]>>(segments: &[S]) -> Option<Self> {
        if segments.len() > MAX_SEGMENTS {
            return None;
        }
        let data: usize = segments.iter().map(|segment| segment.as_ref().len()).sum();
        let mut bytes = Vec::with_capacity(1 + 2 * segments.len() + data);
        bytes.push(u8::try_from(segments.len()).ok()?);
        for segment in segments {
            let length = u16::try_from(segment.as_ref().len()).ok()?;
            bytes.extend_from_slice(&length.to_le_bytes());
        }
        for segment in segments {
            bytes.extend_from_slice(segment.as_ref());
        }
        Some(Self::Segments(bytes.into_boxed_slice()))
    }

    /// This token without its first segment, when that is `other`'s first segment.
    fn after_header_of(&self, other: &Self) -> Option<Self> {
        let (Self::Segments(own), Self::Segments(theirs)) = (self, other) else {
            return None;
        };
        let own = Self::segments(own);
        let theirs = Self::segments(theirs);
        if own.len() < 2 || own.first() != theirs.first() {
            return None;
        }
        Self::from_segments(&own[1..])
    }

    /// The decoded segments.
    fn segments(bytes: &[u8]) -> Vec<&[u8]> {
        let count = usize::from(bytes.first().copied().unwrap_or(0));
        let mut offset = 1 + 2 * count;
        let mut segments = Vec::with_capacity(count);
        for index in 0..count {
            let at = 1 + 2 * index;
            let length = bytes.get(at..at + 2).map_or(0, |pair| {
                usize::from(u16::from_le_bytes([pair[0], pair[1]]))
            });
            let end = (offset + length).min(bytes.len());
            segments.push(bytes.get(offset..end).unwrap_or_default());
            offset = end;
        }
        segments
    }

    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.to_string(),
            Self::Segments(bytes) => {
                let segments = Self::segments(bytes);
                let mut text = String::with_capacity(bytes.len() * 4 / 3 + segments.len());
                for (index, segment) in segments.iter().enumerate() {
                    if index > 0 {
                        text.push('.');
                    }
                    URL_SAFE_NO_PAD.encode_string(segment, &mut text);
                }
                text
            }
        }
    }

    /// The claims of a JWT (its second segment), when it is one.
    fn payload(&self) -> Option<Map<String, Value>> {
        let Self::Segments(bytes) = self else {
            return None;
        };
        let segments = Self::segments(bytes);
        if segments.len() != 3 {
            return None;
        }
        serde_json::from_slice(segments[1]).ok()
    }
}

/// Field kinds in the buffer.
const ABSENT: u8 = 0;
const TEXT: u8 = 1;
const SEGMENTS: u8 = 2;
/// Claims: the ID token's, with an overlay (JSON object) when `TEXT`, as they are when
/// `ABSENT`; `JSON`: their own JSON.
const JSON: u8 = 3;
/// A token whose first segment (the JOSE header) is the ID token's: the other segments.
const SHARED_HEADER: u8 = 4;

/// A stored session, compact: one allocation holding, in this order, provider, `sub`, `sid`,
/// claims, ID token, access token and refresh token, each as a kind byte, a little-endian `u32`
/// length and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactSession {
    bytes: Box<[u8]>,
    access_expires_at: Option<UnixTime>,
    created_at: UnixTime,
    expires_at: UnixTime,
}

/// What selecting and expiring sessions needs, without expanding them.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// The provider.
    pub provider: &'a str,
    /// The user (`sub`).
    pub sub: &'a str,
    /// The provider's session id (`sid`), if it gave one.
    pub sid: Option<&'a str>,
    /// Created.
    pub created_at: UnixTime,
    /// Ends at the latest.
    pub expires_at: UnixTime,
}

impl<'a> SessionFacts<'a> {
    /// The facts of an expanded session.
    pub fn of(session: &'a Session) -> Self {
        let text = |name: &str| session.claims.get(name).and_then(Value::as_str);
        Self {
            provider: &session.provider,
            sub: text("sub").unwrap_or_default(),
            sid: text("sid"),
            created_at: session.created_at,
            expires_at: session.expires_at,
        }
    }
}

fn put(buffer: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    buffer.push(kind);
    // Sessions are far below 4 GiB; a longer field would have failed long before.
    buffer.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    buffer.extend_from_slice(bytes);
}

fn put_token(buffer: &mut Vec<u8>, token: Option<&Token>, id_token: &Token) {
    match token {
        None => put(buffer, ABSENT, &[]),
        Some(token) => match token.after_header_of(id_token) {
            Some(Token::Segments(rest)) => put(buffer, SHARED_HEADER, &rest),
            _ => match token {
                Token::Text(text) => put(buffer, TEXT, text.as_bytes()),
                Token::Segments(bytes) => put(buffer, SEGMENTS, bytes),
            },
        },
    }
}

/// Reads the fields back, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.0.split_first()?;
        let length = usize::try_from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        let field = rest.get(4..4 + length)?;
        self.0 = &rest[4 + length..];
        Some((kind, field))
    }
}

fn token_of((kind, bytes): (u8, &[u8])) -> Option<Option<Token>> {
    match kind {
        ABSENT => Some(None),
        TEXT => Some(Some(Token::Text(std::str::from_utf8(bytes).ok()?.into()))),
        SEGMENTS => Some(Some(Token::Segments(bytes.into()))),
        _ => None,
    }
}

fn text_of(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl CompactSession {
    /// `session`, compact.
    pub fn new(session: &Session) -> Self {
        let facts = SessionFacts::of(session);
        let id_token = Token::new(&session.id_token);
        let own_json = || Value::Object((*session.claims).clone()).to_string();
        let (claims_kind, claims) = match id_token.payload() {
            Some(own) => match overlay(&own, &session.claims) {
                Some(None) => (ABSENT, String::new()),
                Some(Some(overlay)) => (TEXT, overlay),
                None => (JSON, own_json()),
            },
            None => (JSON, own_json()),
        };
        let mut buffer = Vec::with_capacity(session.id_token.len() * 2);
        put(&mut buffer, TEXT, facts.provider.as_bytes());
        put(&mut buffer, TEXT, facts.sub.as_bytes());
        match facts.sid {
            Some(sid) => put(&mut buffer, TEXT, sid.as_bytes()),
            None => put(&mut buffer, ABSENT, &[]),
        }
        put(&mut buffer, claims_kind, claims.as_bytes());
        match &id_token {
            Token::Text(text) => put(&mut buffer, TEXT, text.as_bytes()),
            Token::Segments(bytes) => put(&mut buffer, SEGMENTS, bytes),
        }
        for token in [&session.access_token, &session.refresh_token] {
            put_token(
                &mut buffer,
                token.as_deref().map(Token::new).as_ref(),
                &id_token,
            );
        }
        Self {
            bytes: buffer.into_boxed_slice(),
            access_expires_at: session.access_expires_at,
            created_at: session.created_at,
            expires_at: session.expires_at,
        }
    }

    /// The session back, exactly as it was stored; `None` only if the buffer does not read,
    /// which `new` rules out.
    pub fn expand(&self) -> Option<Session> {
        let mut fields = Fields(&self.bytes);
        let provider = text_of(fields.next()?.1).to_owned();
        let _sub = fields.next()?;
        let _sid = fields.next()?;
        let (claims_kind, claims) = fields.next()?;
        let id_token = token_of(fields.next()?)??;
        let id_text = id_token.text();
        let header = id_text.split('.').next().unwrap_or_default();
        let token_text = |field: (u8, &[u8])| match field.0 {
            SHARED_HEADER => Some(Some(format!(
                "{header}.{}",
                Token::Segments(field.1.into()).text()
            ))),
            _ => Some(token_of(field)?.as_ref().map(Token::text)),
        };
        let access_token = token_text(fields.next()?)?;
        let refresh_token = token_text(fields.next()?)?;
        let claims: Map<String, Value> = match claims_kind {
            ABSENT => id_token.payload()?,
            TEXT => {
                let mut own = id_token.payload()?;
                own.extend(serde_json::from_slice::<Map<String, Value>>(claims).ok()?);
                own
            }
            _ => serde_json::from_slice(claims).ok()?,
        };
        Some(Session {
            provider,
            claims: Arc::new(claims),
            id_token: id_text,
            access_token,
            refresh_token,
            access_expires_at: self.access_expires_at,
            created_at: self.created_at,
            expires_at: self.expires_at,
        })
    }

    /// Provider, `sub`, `sid` and times.
    pub fn facts(&self) -> SessionFacts<'_> {
        let mut fields = Fields(&self.bytes);
        let provider = fields.next().map_or("", |(_, bytes)| text_of(bytes));
        let sub = fields.next().map_or("", |(_, bytes)| text_of(bytes));
        let sid = fields
            .next()
            .filter(|(kind, _)| *kind == TEXT)
            .map(|(_, bytes)| text_of(bytes));
        SessionFacts {
            provider,
            sub,
            sid,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }

    /// The session as bytes to seal into a cookie: a format byte (never `{`, which starts the
    /// JSON that older cookies hold), the times, then the buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(26 + self.bytes.len());
        bytes.push(COOKIE_FORMAT);
        bytes.extend_from_slice(&self.created_at.to_le_bytes());
        bytes.extend_from_slice(&self.expires_at.to_le_bytes());
        match self.access_expires_at {
            Some(at) => {
                bytes.push(1);
                bytes.extend_from_slice(&at.to_le_bytes());
            }
            None => bytes.push(0),
        }
        bytes.extend_from_slice(&self.bytes);
        bytes
    }

    /// What `to_bytes` made; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        if format != COOKIE_FORMAT {
            return None;
        }
        let time = |bytes: &[u8]| Some(UnixTime::from_le_bytes(bytes.get(..8)?.try_into().ok()?));
        let created_at = time(rest)?;
        let expires_at = time(rest.get(8..)?)?;
        let (access_expires_at, buffer) = match rest.get(16)? {
            0 => (None, rest.get(17..)?),
            1 => (Some(time(rest.get(17..)?)?), rest.get(25..)?),
            _ => return None,
        };
        // Exactly the seven fields, nothing after them.
        let mut fields = Fields(buffer);
        let read: usize = fields
            .by_ref()
            .take(7)
            .map(|(_, field)| 5 + field.len())
            .sum();
        if read != buffer.len() || fields.next().is_some() {
            return None;
        }
        Some(Self {
            bytes: buffer.into(),
            access_expires_at,
            created_at,
            expires_at,
        })
    }
}

/// The first byte of a compact session sealed into a cookie.
const COOKIE_FORMAT: u8 = 1;

/// The JSON object that turns `own` into `claims` when put over it (`Some(None)`: nothing to
/// put), or `None` when `claims` lacks some of `own`'s (an overlay only adds and replaces).
fn overlay(own: &Map<String, Value>, claims: &Map<String, Value>) -> Option<Option<String>> {
    if own.keys().any(|name| !claims.contains_key(name)) {
        return None;
    }
    let changed: Map<String, Value> = claims
        .iter()
        .filter(|(name, value)| own.get(*name) != Some(*value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Some((!changed.is_empty()).then(|| Value::Object(changed).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signature = URL_SAFE_NO_PAD.encode([7u8; 256]);
        format!("{header}.{payload}.{signature}")
    }

    fn session(id_claims: &Value, claims: &Value, access: Option<&str>) -> Session {
        Session {
            provider: "corp".to_owned(),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
            id_token: jwt(id_claims),
            access_token: access.map(str::to_owned),
            refresh_token: Some("opaque+refresh/token==".to_owned()),
            access_expires_at: Some(1_700_000_300),
            created_at: 1_700_000_000,
            expires_at: 1_700_043_200,
        }
    }

    /// Kinds of the claims, ID, access and refresh token fields.
    fn kinds(compact: &CompactSession) -> Vec<u8> {
        Fields(&compact.bytes)
            .skip(3)
            .map(|(kind, _)| kind)
            .collect()
    }

    fn assert_round_trip(original: &Session) -> CompactSession {
        let compact = CompactSession::new(original);
        let expanded = compact.expand().unwrap_or_else(|| panic!("expands"));
        assert_eq!(
            serde_json::to_value(&expanded).ok(),
            serde_json::to_value(original).ok()
        );
        compact
    }

    #[test]
    fn claims_that_are_the_id_tokens_are_not_stored_twice() {
        let claims = serde_json::json!({"sub": "u1", "sid": "s1", "email": "a@example.com"});
        let access = jwt(&serde_json::json!({"sub": "u1", "scope": "openid"}));
        let original = session(&claims, &claims, Some(&access));
        let compact = assert_round_trip(&original);
        assert_eq!(kinds(&compact), [ABSENT, SEGMENTS, SHARED_HEADER, TEXT]);
        let facts = compact.facts();
        assert_eq!(
            (facts.provider, facts.sub, facts.sid),
            ("corp", "u1", Some("s1"))
        );
        let text_bytes = original.id_token.len() + access.len() + 22;
        // Decoded bytes are 3/4 of the text; field headers and the text refresh token add some.
        assert!(
            compact.bytes.len() < text_bytes * 17 / 20,
            "{} of {text_bytes}",
            compact.bytes.len()
        );
    }

    #[test]
    fn userinfo_merged_over_the_id_token_is_an_overlay() {
        let own = serde_json::json!({"sub": "u1", "name": "Old"});
        let merged = serde_json::json!({"sub": "u1", "name": "New", "groups": ["a", "b"]});
        let compact = assert_round_trip(&session(&own, &merged, None));
        assert_eq!(kinds(&compact), [TEXT, SEGMENTS, ABSENT, TEXT]);
        assert_eq!(compact.facts().sid, None);
    }

    #[test]
    fn claims_missing_some_of_the_id_tokens_are_kept_whole() {
        let own = serde_json::json!({"sub": "u1", "nonce": "n"});
        let claims = serde_json::json!({"sub": "u1"});
        let compact = assert_round_trip(&session(&own, &claims, None));
        assert_eq!(kinds(&compact)[0], JSON);
    }

    #[test]
    fn tokens_that_would_not_come_back_exactly_are_kept_as_text() {
        let claims = serde_json::json!({"sub": "u1"});
        // "QR" has bits set after its one byte: not canonical (that byte is "QQ").
        for token in [
            "QQ.QR.QQ",
            "not a token",
            "QQ.QQ.QQ.QQ.QQ.QQ.QQ.QQ.QQ",
            "x==",
        ] {
            assert_eq!(Token::new(token), Token::Text(token.into()), "{token}");
        }
        let odd = session(&claims, &claims, Some("QQ.QR.QQ"));
        assert_eq!(kinds(&assert_round_trip(&odd))[2], TEXT);
        let mut plain = session(&claims, &claims, None);
        plain.id_token = "not-a-jwt".to_owned();
        let compact = assert_round_trip(&plain);
        assert_eq!(kinds(&compact)[..2], [JSON, TEXT]);
    }

    #[test]
    fn cookie_bytes_round_trip_and_refuse_anything_else() {
        let claims = serde_json::json!({"sub": "u1", "sid": "s1"});
        let access = jwt(&serde_json::json!({"sub": "u1"}));
        for access_expires_at in [Some(1_700_000_300), None] {
            let mut original = session(&claims, &claims, Some(&access));
            original.access_expires_at = access_expires_at;
            let compact = CompactSession::new(&original);
            let bytes = compact.to_bytes();
            assert_eq!(CompactSession::from_bytes(&bytes).as_ref(), Some(&compact));
            let expanded = CompactSession::from_bytes(&bytes).and_then(|c| c.expand());
            assert_eq!(
                expanded.and_then(|s| serde_json::to_value(s).ok()),
                serde_json::to_value(&original).ok()
            );
            assert!(CompactSession::from_bytes(&bytes[..bytes.len() - 1]).is_none());
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(CompactSession::from_bytes(&longer).is_none());
        }
        assert!(CompactSession::from_bytes(b"{\"provider\":\"p\"}").is_none());
        assert!(CompactSession::from_bytes(&[]).is_none());
    }

    /// Claims stored as JSON text are read back as the same numbers, whatever their digits:
    /// a float that did not parse back exactly (or at all, near `f64::MAX`) changed or lost the
    /// session.
    #[test]
    fn claims_with_any_number_come_back_exactly() {
        let own = serde_json::json!({"sub": "u1", "n": 1.5});
        for number in [2.003_039_774_426_776_2e-253, f64::MAX, 0.1, 5e-324, 1e23] {
            let claims = serde_json::json!({"sub": "u1", "n": number});
            // As the ID token's claims with an overlay, and as claims of their own.
            assert_round_trip(&session(&own, &claims, None));
            let mut plain = session(&own, &claims, None);
            plain.id_token = "not-a-jwt".to_owned();
            assert_round_trip(&plain);
        }
    }

    #[test]
    fn a_damaged_buffer_does_not_expand() {
        let claims = serde_json::json!({"sub": "u1"});
        let mut compact = CompactSession::new(&session(&claims, &claims, None));
        let length = compact.bytes.len();
        compact.bytes = compact.bytes[..length - 3].into();
        assert!(compact.expand().is_none());
    }
}
