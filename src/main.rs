//! The `m365-forwarder` binary: command line, signals and exit codes.

mod cli;

/// mimalloc: the pipeline allocates and frees many small buffers per event across threads;
/// glibc's malloc spent about 40 % of the CPU of a saturated run in allocation (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
