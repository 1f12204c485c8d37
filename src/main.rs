//! The `m365-forwarder` binary: command line, signals and exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
