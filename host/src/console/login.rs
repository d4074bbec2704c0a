//! Console sign-in and sign-out: a token exchanged for a session cookie
//! (the token itself is never kept in the browser), and the session ended.

use super::*;

pub(super) async fn login_page(State(state): State<AppState>) -> Response {
    if state.server.tokens.is_none() {
        return Redirect::to("/ui/").into_response();
    }
    login_form(None).into_response()
}

pub(super) fn login_form(message: Option<&str>) -> Markup {
    page(
        None,
        "",
        "Log in",
        html! {
            form.login method="post" action="/ui/login" {
                h1 { "Log in to wasaga" }
                @if let Some(m) = message { p.error { (m) } }
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" autofocus;
                button type="submit" { "Log in" }
                p.muted { "The token is kept in an HttpOnly cookie for this site only." }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Logs in: a valid token makes a session (see `api::session`). The gate
/// already refused a login posted by another site's page; failed tokens
/// count against the address.
pub(super) async fn login(
    State(state): State<AppState>,
    Extension(Peer(peer)): Extension<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(tokens) = state.server.tokens.as_ref() else {
        return Redirect::to("/ui/").into_response();
    };
    if let Some(left) = state.throttle.refused_for(peer) {
        return Throttle::refusal(left);
    }
    let token = form.token.trim();
    let Some(caller) = tokens.check(token) else {
        state.throttle.failed(peer);
        return (
            StatusCode::UNAUTHORIZED,
            login_form(Some("That token is not valid.")),
        )
            .into_response();
    };
    let cookie = match session::create(
        state.store.as_ref(),
        &caller,
        token,
        state.server.session_ttl,
    )
    .await
    {
        Ok((_, cookie)) => cookie,
        Err(e) => {
            return error_page(
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &format!("storing the session failed: {e}"),
            );
        }
    };
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Logs out: revokes the session on every host, and clears the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let id = session::session_id(&headers);
    if !id
        .as_deref()
        .is_some_and(|id| session::csrf_ok(id, &form.csrf))
    {
        return error_page(
            None,
            StatusCode::FORBIDDEN,
            "Stale form",
            "This page is out of date (you logged out, or logged in again). Reload it and try again.",
        );
    }
    if let Some(id) = id
        && let Err(e) = session::revoke(state.store.as_ref(), &id).await
    {
        return error_page(
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("revoking the session failed: {e}; you are still logged in"),
        );
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(session::CLEAR_COOKIE),
    );
    response
}
