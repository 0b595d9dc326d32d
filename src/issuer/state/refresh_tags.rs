//! Refresh tokens only this deployment can make, for the Redis store: Redis holds which tokens
//! of a grant are fresh by a digest of each, and whoever can write to Redis could otherwise
//! mark a token of their own making fresh for any grant they see there, and refresh it into
//! that user's tokens. Each token carries a tag over its grant and random part, made with a
//! key derived from the first session secret; every listed secret verifies (rotation works as
//! for sealed values), and a token without a valid tag is refused before Redis is asked.
//!
//! A token is `<grant id>.<random 16 bytes ‖ tag 16 bytes>`, base64url: the shape
//! `grant_of_refresh_token` reads (43 characters each side).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::secret::Secret;

const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// Makes and checks refresh tokens' tags.
pub struct RefreshTags {
    /// One key per session secret; the first tags.
    keys: Vec<hmac::Key>,
}

impl RefreshTags {
    /// Keys derived from the session `secrets` (the first tags, every one verifies).
    pub fn new(secrets: &[Secret<String>]) -> Self {
        let keys = secrets
            .iter()
            .map(|secret| {
                let derived = hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()),
                    b"tollgate token-service refresh token tag v1",
                );
                hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
            })
            .collect();
        Self { keys }
    }

    /// A new refresh token for `grant_id`; `None` without a secret to tag it with.
    pub fn token(&self, grant_id: &str) -> Option<String> {
        let key = self.keys.first()?;
        let random = crate::random::bytes::<RANDOM_LEN>();
        let mut secret = [0u8; RANDOM_LEN + TAG_LEN];
        secret[..RANDOM_LEN].copy_from_slice(&random);
        secret[RANDOM_LEN..].copy_from_slice(&tag(key, grant_id, &random));
        Some(format!("{grant_id}.{}", URL_SAFE_NO_PAD.encode(secret)))
    }

    /// Whether `token` was made by [`Self::token`] with one of the listed secrets.
    pub fn verify(&self, token: &str) -> bool {
        let Some((grant_id, secret)) = token.split_once('.') else {
            return false;
        };
        let Ok(secret) = URL_SAFE_NO_PAD.decode(secret) else {
            return false;
        };
        if secret.len() != RANDOM_LEN + TAG_LEN {
            return false;
        }
        let (random, presented) = secret.split_at(RANDOM_LEN);
        // Every key is tried, so the time taken does not say which one matched.
        self.keys.iter().fold(false, |found, key| {
            crate::secret::constant_time_eq(&tag(key, grant_id, random), presented) | found
        })
    }
}

/// The tag of a grant's token with `random` bytes: HMAC-SHA256, truncated.
fn tag(key: &hmac::Key, grant_id: &str, random: &[u8]) -> [u8; TAG_LEN] {
    let mut context = hmac::Context::with_key(key);
    context.update(grant_id.as_bytes());
    context.update(b".");
    context.update(random);
    let full = context.sign();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(secrets: &[&str]) -> RefreshTags {
        let secrets: Vec<Secret<String>> = secrets
            .iter()
            .map(|secret| Secret::new((*secret).to_owned()))
            .collect();
        RefreshTags::new(&secrets)
    }

    const GRANT: &str = "gggggggggggggggggggggggggggggggggggggggggg0";

    #[test]
    fn a_token_is_verified_by_every_listed_secret_and_keeps_the_shape_of_refresh_tokens() {
        let old = tags(&["old secret"]);
        let token = old.token(GRANT).unwrap();
        assert_eq!(
            crate::issuer::state::grant_of_refresh_token(&token),
            Some(GRANT)
        );
        assert!(old.verify(&token));
        assert!(
            tags(&["new secret", "old secret"]).verify(&token),
            "rotated"
        );
        assert!(!tags(&["new secret"]).verify(&token), "no longer listed");
        assert!(old.token(GRANT) != Some(token), "random");
    }

    #[test]
    fn a_token_not_made_here_is_refused() {
        let tags = tags(&["secret"]);
        let token = tags.token(GRANT).unwrap();
        let (_, secret) = token.split_once('.').unwrap();
        let other_grant = "hggggggggggggggggggggggggggggggggggggggggg0";
        // Another grant's, a plain random one (as older Tollgates made), a flipped bit, junk.
        let mut flipped = URL_SAFE_NO_PAD.decode(secret).unwrap();
        flipped[RANDOM_LEN + 3] ^= 1;
        for forged in [
            format!("{other_grant}.{secret}"),
            format!("{GRANT}.{}", crate::random::token()),
            format!("{GRANT}.{}", URL_SAFE_NO_PAD.encode(&flipped)),
            format!("{GRANT}.{}", &secret[..20]),
            GRANT.to_owned(),
            String::new(),
        ] {
            assert!(!tags.verify(&forged), "{forged}");
        }
        assert!(
            !RefreshTags::new(&[]).verify(&token),
            "no secret verifies nothing"
        );
        assert!(RefreshTags::new(&[]).token(GRANT).is_none());
    }
}
