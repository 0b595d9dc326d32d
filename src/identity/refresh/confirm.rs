//! After a refresh whose write no replica confirmed: the refreshing replica writes the result
//! again, holding the lease, until the (maybe new) master has it (SPEC §12).

use std::sync::Arc;
use std::time::Duration;

use super::{OwnedCookies, borrow};
use crate::clock::UnixTime;
use crate::session::Session;
use crate::session::store::{RefreshClaim, SessionError, Sessions};

/// A refreshed session whose write no replica confirmed, and the lease held meanwhile.
pub(super) struct Unconfirmed {
    pub(super) sessions: Arc<Sessions>,
    pub(super) cookies: OwnedCookies,
    pub(super) spent: String,
    pub(super) refreshed: Arc<Session>,
    pub(super) now: UnixTime,
    pub(super) claim: RefreshClaim,
    /// Before the lease (taken for twice the provider timeout and more) runs out.
    pub(super) until: tokio::time::Instant,
}

/// How often an unconfirmed refresh is written again.
const CONFIRM_INTERVAL: Duration = Duration::from_millis(250);

/// Writes an unconfirmed refresh again until a replica confirms it (after a failover: the new
/// master, which never had it), then gives the lease back. Meanwhile other replicas wait for
/// the lease rather than present the spent token, which a rotating provider would refuse.
pub(super) async fn confirm_later(unconfirmed: Unconfirmed) {
    let cookies = borrow(&unconfirmed.cookies);
    loop {
        tokio::time::sleep(CONFIRM_INTERVAL).await;
        match unconfirmed
            .sessions
            .confirm_refreshed(
                &cookies,
                &unconfirmed.spent,
                &unconfirmed.refreshed,
                unconfirmed.now,
            )
            .await
        {
            Ok(()) => {
                tracing::info!("a refreshed session no replica had confirmed is now stored");
                break;
            }
            Err(SessionError::Store(error)) if tokio::time::Instant::now() < unconfirmed.until => {
                tracing::debug!(%error, "refreshed session not confirmed yet; trying again");
            }
            Err(error) => {
                tracing::warn!(%error, "a refreshed session could not be stored; its refresh token may be lost");
                break;
            }
        }
    }
    unconfirmed
        .sessions
        .release_refresh(&cookies, &unconfirmed.claim)
        .await;
}
