//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!`
//! embeds `migrations/` at compile time, and on stable Rust the macro cannot
//! tell Cargo to watch that directory itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
