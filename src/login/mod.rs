//! The browser login flow: `/signin`, `/callback`, `/signout`.

pub mod redirect;
