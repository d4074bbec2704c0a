//! The test cloud as a program, for trying a step that calls an API by
//! hand (README, "Calling an API from a step"): a stand-in for a provider
//! that creates and deletes resources behind a bearer token.
//!
//! `cargo run -p wasaga-tests --bin test-cloud -- [ADDR] [TOKEN] [BOOT]`
//! (default `127.0.0.1:9090`, `demo-token` and 3: a new resource answers
//! `booting` to its first 3 `GET`s, then `active`). It prints what it holds
//! every time that changes.

use anyhow::Context;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9090".into());
    let token = args.next().unwrap_or_else(|| "demo-token".into());
    let boot: u32 = match args.next() {
        Some(n) => n.parse().context("BOOT: a number of GETs")?,
        None => 3,
    };
    let cloud = wasaga_tests::Cloud::start_on(&addr, &token)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    cloud.boot_after(boot);
    println!(
        "test cloud on {} (token {token}); POST /v2/resources, GET and DELETE /v2/resources/ID \
         (booting for {boot} GETs)",
        cloud.origin()
    );
    let mut shown = None;
    loop {
        let now = (cloud.counts(), cloud.resources());
        if shown.as_ref() != Some(&now) {
            let ((creates, deletes, refused), resources) = &now;
            println!(
                "{} resources {:?}; {creates} creates, {deletes} deletes, {refused} refused for their token",
                resources.len(),
                resources.keys().collect::<Vec<_>>()
            );
            shown = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
