//! The `wasaga` binary: the server and the client commands (see `wasaga::cli`).

/// See [`wasaga::Allocator`] for why not the system's.
#[global_allocator]
static ALLOCATOR: wasaga::Allocator = wasaga::Allocator;

fn main() -> std::process::ExitCode {
    wasaga::cli::main()
}
