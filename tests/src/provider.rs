//! A provider's API behind a budget: it notes when each request arrived
//! (and for which saga, from the `counter` plugin's query), and answers
//! the next requests `429` with a `Retry-After` when told.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Default)]
pub struct Provider {
    pub addr: Option<std::net::SocketAddr>,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    throttle: Arc<Mutex<Option<(u32, &'static str)>>>,
    first_429: Arc<Mutex<Option<Instant>>>,
}

impl Provider {
    pub async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = Provider {
            addr: Some(listener.local_addr().unwrap()),
            ..Provider::default()
        };
        let state = provider.clone();
        let app = axum::Router::new().route(
            "/count",
            axum::routing::get(
                move |axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>| {
                    let state = state.clone();
                    async move {
                        let saga = q.get("saga").cloned().unwrap_or_default();
                        let now = Instant::now();
                        state.seen.lock().unwrap().push((saga, now));
                        let mut throttle = state.throttle.lock().unwrap();
                        if let Some((left, retry_after)) = throttle.as_mut() {
                            *left -= 1;
                            let retry_after = *retry_after;
                            if *left == 0 {
                                *throttle = None;
                            }
                            state.first_429.lock().unwrap().get_or_insert(now);
                            return (
                                axum::http::StatusCode::TOO_MANY_REQUESTS,
                                [("retry-after", retry_after)],
                                "slow down",
                            );
                        }
                        (axum::http::StatusCode::OK, [("x-served", "1")], "1")
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        provider
    }

    /// The `counter_url` input (and the budget's origin) for it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("a started provider"))
    }

    /// Every request so far: the saga it was for, and when it arrived.
    pub fn arrivals(&self) -> Vec<(String, Instant)> {
        self.seen.lock().unwrap().clone()
    }

    /// The next `n` requests are answered 429 with `Retry-After: after`.
    pub fn throttle(&self, n: u32, after: &'static str) {
        *self.throttle.lock().unwrap() = Some((n, after));
    }

    /// When it first answered 429.
    pub fn first_429(&self) -> Option<Instant> {
        *self.first_429.lock().unwrap()
    }
}
