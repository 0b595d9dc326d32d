//! The values a route's identity headers get (SPEC §5 `headers`): a claim, a JSONPath over
//! the claims, the access or ID token, or the userinfo as base64 JSON.

use axum::http::HeaderValue;
use base64::Engine as _;

use crate::config::HeaderSource;
use crate::identity::Identity;

/// The value of one identity header: `Ok(None)` when the identity has nothing for it, `Err`
/// when its value holds characters a header cannot carry (CR, LF, NUL, …).
pub(super) fn header_value(
    identity: &Identity,
    source: &HeaderSource,
) -> Result<Option<HeaderValue>, ()> {
    let Some(text) = header_text(identity, source) else {
        return Ok(None);
    };
    HeaderValue::from_maybe_shared(axum::body::Bytes::from(text))
        .map(Some)
        .map_err(|_| ())
}

fn header_text(identity: &Identity, source: &HeaderSource) -> Option<String> {
    let access_token = identity.access_token();
    Some(match source {
        HeaderSource::AccessToken => access_token?.to_owned(),
        HeaderSource::BearerAccessToken => format!("Bearer {}", access_token?),
        HeaderSource::IdToken => identity.session.as_ref()?.id_token.clone(),
        HeaderSource::UserinfoBase64 => base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(identity.claims.as_ref()).ok()?),
        HeaderSource::Claim(name) => crate::policy::header_text(identity.claims.get(name)?),
        HeaderSource::Json(path) => {
            let document = serde_json::Value::Object(identity.claims.as_ref().clone());
            let nodes = path.query(&document).all();
            if nodes.is_empty() {
                return None;
            }
            nodes
                .into_iter()
                .map(crate::policy::header_text)
                .collect::<Vec<_>>()
                .join(",")
        }
    })
}
