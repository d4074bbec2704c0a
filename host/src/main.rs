//! The `wasaga` binary: the server and the client commands (see `wasaga::cli`).

/// mimalloc rather than glibc's malloc: a saga's path (HTTP, JSON, the Wasm
/// call's strings, the store's rows) allocates small blocks on one thread
/// and frees many of them on another, which glibc's arenas handle slowly
/// (measured: about 17 % more steps/s at concurrency 64). Built without
/// transparent huge pages (`no_thp`): with them an idle server held 88 MiB
/// instead of 36 MiB, for no measured gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasaga::cli::main()
}
