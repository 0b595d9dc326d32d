//! `[forward_auth]`: its provider, the answer to unauthenticated requests, the token cookie
//! and the Envoy gRPC listener.

use super::Checker;
use crate::config::raw::RawForwardAuth;
use crate::config::{ForwardAuthConfig, ProviderConfig, Unauthenticated};

impl Checker<'_> {
    pub(super) fn forward_auth(
        &mut self,
        raw: RawForwardAuth,
        providers: &[ProviderConfig],
    ) -> Option<ForwardAuthConfig> {
        if raw.enabled == Some(false) {
            return None;
        }
        let provider = self.required("forward_auth.provider", raw.provider)?;
        if !providers.iter().any(|candidate| candidate.name == provider) {
            self.problem(
                "forward_auth.provider",
                format!("no [[provider]] is named `{provider}`"),
            );
        }
        let unauthenticated = match raw.unauthenticated.as_deref() {
            None | Some("status") => Unauthenticated::Status,
            Some("redirect") => Unauthenticated::Redirect,
            Some(other) => {
                self.problem(
                    "forward_auth.unauthenticated",
                    format!("`{other}` is not one of status, redirect"),
                );
                Unauthenticated::Status
            }
        };
        let grpc_listen = raw
            .grpc_listen
            .as_deref()
            .and_then(|value| self.socket_addr("forward_auth.grpc_listen", value));
        if let Some(cookie) = &raw.token_cookie
            && (cookie.is_empty()
                || !cookie
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&byte)))
        {
            self.problem("forward_auth.token_cookie", "is not a valid cookie name");
        }
        Some(ForwardAuthConfig {
            provider,
            token_cookie: raw.token_cookie,
            unauthenticated,
            grpc_listen,
        })
    }
}
