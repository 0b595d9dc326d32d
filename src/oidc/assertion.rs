//! `private_key_jwt` (OIDC Core §9, RFC 7523 §2.2 and §3): the client assertion that
//! authenticates Tollgate at a provider's token and introspection endpoints. A new one for every
//! request (unique `jti`); never logged.

use serde_json::json;

use super::ProviderError;
use crate::clock::UnixTime;
use crate::config::{AssertionAudience, ClientKeyConfig, ProviderConfig};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: long enough for one request, short enough that a captured
/// one is soon useless (SPEC §3: at most 60 s).
pub const LIFETIME_SECONDS: UnixTime = 60;

/// The claims of one assertion: `iss` = `sub` = the client id, `aud` = the issuer or the
/// endpoint `url` (`client_assertion_audience`), a random `jti`, `iat` = `now`, `exp` a minute
/// later (RFC 7523 §3).
pub fn claims(
    provider: &ProviderConfig,
    audience: AssertionAudience,
    url: &str,
    now: UnixTime,
) -> serde_json::Value {
    let aud = match audience {
        AssertionAudience::Issuer => provider.issuer.as_str(),
        AssertionAudience::Endpoint => url,
    };
    json!({
        "iss": provider.client_id,
        "sub": provider.client_id,
        "aud": aud,
        "jti": crate::random::token(),
        "iat": now,
        "exp": now + LIFETIME_SECONDS,
    })
}

/// A signed assertion for a request to `url`, with the algorithm the key and the provider's
/// `supported` list (its discovery's `…_auth_signing_alg_values_supported`) agree on.
///
/// # Errors
/// `BadResponse` when the provider lists no algorithm of the key, or signing fails (the
/// request is then not sent: no client authentication is ever skipped).
pub fn sign(
    provider: &ProviderConfig,
    key: &ClientKeyConfig,
    url: &str,
    supported: Option<&[String]>,
    now: UnixTime,
) -> Result<String, ProviderError> {
    let unusable = |error: crate::jose::ClientKeyError| {
        ProviderError::BadResponse(format!("private_key_jwt: {error}"))
    };
    let algorithm = key.key.algorithm_for(supported).map_err(unusable)?;
    key.key
        .sign(algorithm, &claims(provider, key.audience, url, now))
        .map_err(unusable)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::jose::test_keys;

    const TOKEN_ENDPOINT: &str = "https://login.example.com/oauth2/token";

    /// A provider with `private_key_jwt` and a fresh key from `pem`.
    fn provider(pem: &str, extra: &str) -> ProviderConfig {
        let dir =
            std::env::temp_dir().join(format!("tollgate-assertion-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("key-{}.pem", crate::random::token()));
        std::fs::write(&path, pem).unwrap();
        let text = format!(
            "[[provider]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"tollgate\"\nclient_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"\n{extra}\n",
            path.display()
        );
        crate::config::load(&text, &std::collections::BTreeMap::new())
            .unwrap()
            .providers
            .remove(0)
    }

    fn decoded(jws: &str) -> (serde_json::Value, serde_json::Value) {
        let mut parts = jws.split('.');
        let mut json = || {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
        };
        (json(), json())
    }

    fn signed(
        provider: &ProviderConfig,
        supported: Option<&[String]>,
    ) -> Result<String, ProviderError> {
        sign(
            provider,
            provider.client_key.as_ref().unwrap(),
            TOKEN_ENDPOINT,
            supported,
            1_800_000_000,
        )
    }

    #[test]
    fn claims_name_the_client_the_issuer_and_a_fresh_jti_for_one_minute() {
        let provider = provider(&test_keys::p256_pem(), "client_key_id = \"tollgate-2026\"");
        let first = signed(&provider, None).unwrap();
        let (header, claims) = decoded(&first);
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": "tollgate-2026"})
        );
        assert_eq!(claims["iss"], "tollgate");
        assert_eq!(claims["sub"], "tollgate");
        assert_eq!(claims["aud"], "https://login.example.com");
        assert_eq!(claims["iat"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_060);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 43, "256 random bits");
        let (_, again) = decoded(&signed(&provider, None).unwrap());
        assert_ne!(claims["jti"], again["jti"], "a new jti for every assertion");
        assert_eq!(
            claims.as_object().unwrap().len(),
            6,
            "no other claims: {claims}"
        );
    }

    #[test]
    fn the_audience_can_be_the_endpoint() {
        let provider = provider(
            &test_keys::p256_pem(),
            "client_assertion_audience = \"token_endpoint\"",
        );
        let (header, claims) = decoded(&signed(&provider, None).unwrap());
        assert_eq!(claims["aud"], TOKEN_ENDPOINT);
        assert!(header.get("kid").is_none(), "no kid unless configured");
    }

    #[test]
    fn rsa_assertions_follow_the_providers_list() {
        let provider = provider(&test_keys::rsa_pem(), "");
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>()
        };
        for (supported, expected) in [
            (None, "RS256"),
            (Some(list(&["RS256", "PS256", "ES256"])), "PS256"),
            (Some(list(&["RS256", "ES256"])), "RS256"),
        ] {
            let (header, _) = decoded(&signed(&provider, supported.as_deref()).unwrap());
            assert_eq!(header["alg"], expected, "{supported:?}");
        }
        match signed(&provider, Some(&list(&["ES256", "HS256"]))) {
            Err(ProviderError::BadResponse(message)) => assert_eq!(
                message,
                "private_key_jwt: the provider accepts client assertions signed with ES256, HS256, none of this key's PS256, RS256"
            ),
            other => panic!("{other:?}"),
        }
    }
}
