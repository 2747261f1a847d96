//! The `edgeprio` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    edgeprio::cli::main()
}
