//! Who is calling, and what they may do: bearer tokens with roles.
//!
//! A token has a role and a label. `viewer` may read everything under
//! `/v1` (and the event streams and `/metrics`); `operator` may also start,
//! cancel, pause, resume, retry and resolve sagas; `admin` may do
//! everything (plugins, grants, secrets, templates). The label is the
//! actor: it fills `triggered_by` when a start does not give one and is
//! recorded on every human action. A missing or unknown token is `401`; a
//! known one without the role is `403`.
//!
//! The tokens themselves (`crate::model::Tokens`) are values the
//! configuration holds; this module is how a request presents one.

use super::error::ApiError;
pub use crate::model::{Caller, Role, Tokens, TokensError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

impl Caller {
    /// `403` unless the caller has `role` (or a higher one).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "this needs the {role} role; the token{} has the {} role",
            self.label
                .as_deref()
                .map(|l| format!(" `{l}`"))
                .unwrap_or_default(),
            self.role
        )))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::anonymous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_below_the_one_needed_is_forbidden() {
        let mut tokens = Tokens::default();
        tokens.add_file("viewer dashboards view-secret\n").unwrap();
        let viewer = tokens.check("view-secret").unwrap();
        assert!(viewer.require(Role::Viewer).is_ok());
        let refused = viewer.require(Role::Operator).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::FORBIDDEN);
        assert_eq!(refused.code, "forbidden");
    }
}
