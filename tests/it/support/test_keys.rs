//! Keys the test provider signs with, and JWTs signed with them by aws-lc-rs directly: never
//! with Tollgate's own JOSE code, so that a bug there cannot cancel itself out. Used by
//! `TestIdp` and, through `#[path]`, by the unit tests of `src/token`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Signature algorithms the test provider can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    /// `alg: none`, empty signature.
    None,
    /// HS256 keyed with the RSA public key's JWK JSON (algorithm confusion).
    Hs256WithPublicKey,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::None => "none",
            Self::Hs256WithPublicKey => "HS256",
        }
    }
}

pub struct Keys {
    rsa: RsaKeyPair,
    rsa_kid: String,
    ec256: EcdsaKeyPair,
    ec384: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

fn rsa_jwk(key: &RsaKeyPair, kid: &str) -> Value {
    let public = key.public_key();
    json!({
        "kty": "RSA", "kid": kid, "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    })
}

fn ec_jwk(key: &EcdsaKeyPair, kid: &str, crv: &str) -> Value {
    let point = key.public_key().as_ref();
    let half = (point.len() - 1) / 2;
    json!({
        "kty": "EC", "kid": kid, "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(&point[1..=half]),
        "y": URL_SAFE_NO_PAD.encode(&point[half + 1..]),
    })
}

impl Keys {
    pub fn new(rsa_kid: &str) -> Self {
        let rng = SystemRandom::new();
        let ec256 = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let ec384 = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        Self {
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            rsa_kid: rsa_kid.to_owned(),
            ec256,
            ec384,
            ed: Ed25519KeyPair::generate().unwrap(),
        }
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [
            rsa_jwk(&self.rsa, &self.rsa_kid),
            ec_jwk(&self.ec256, "ec-256", "P-256"),
            ec_jwk(&self.ec384, "ec-384", "P-384"),
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": URL_SAFE_NO_PAD.encode(self.ed.public_key().as_ref())},
        ]})
    }

    pub fn default_kid(&self, alg: Alg) -> String {
        match alg {
            Alg::ES256 => "ec-256".to_owned(),
            Alg::ES384 => "ec-384".to_owned(),
            Alg::EdDSA => "ed-1".to_owned(),
            _ => self.rsa_kid.clone(),
        }
    }

    pub fn sign(&self, alg: Alg, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let rsa = |padding: &'static dyn signature::RsaEncoding| {
            let mut out = vec![0u8; self.rsa.public_modulus_len()];
            self.rsa.sign(padding, &rng, input, &mut out).unwrap();
            out
        };
        match alg {
            Alg::RS256 => rsa(&signature::RSA_PKCS1_SHA256),
            Alg::RS384 => rsa(&signature::RSA_PKCS1_SHA384),
            Alg::RS512 => rsa(&signature::RSA_PKCS1_SHA512),
            Alg::PS256 => rsa(&signature::RSA_PSS_SHA256),
            Alg::PS384 => rsa(&signature::RSA_PSS_SHA384),
            Alg::PS512 => rsa(&signature::RSA_PSS_SHA512),
            Alg::ES256 => self.ec256.sign(&rng, input).unwrap().as_ref().to_vec(),
            Alg::ES384 => self.ec384.sign(&rng, input).unwrap().as_ref().to_vec(),
            Alg::EdDSA => self.ed.sign(input).as_ref().to_vec(),
            Alg::None => Vec::new(),
            Alg::Hs256WithPublicKey => {
                let secret = rsa_jwk(&self.rsa, &self.rsa_kid).to_string();
                let key =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
                aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
            }
        }
    }
}

impl Keys {
    /// A compact JWS over `claims` with `alg`; `kid` `None` uses the algorithm's key id, and
    /// `Some(None)` leaves `kid` out of the header.
    pub fn sign_jwt(
        &self,
        alg: Alg,
        kid: Option<Option<&str>>,
        typ: &str,
        claims: &Value,
    ) -> String {
        let kid = kid.map_or_else(|| Some(self.default_kid(alg)), |kid| kid.map(str::to_owned));
        let mut header = json!({"alg": alg.name(), "typ": typ});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(alg, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}
