//! The `wasaga` binary: the server and the client commands (see `wasaga::cli`).

fn main() -> std::process::ExitCode {
    wasaga::cli::main()
}
