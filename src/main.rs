//! The `m365-forwarder` binary: command line, signals and exit codes.

mod cli;

/// mimalloc: the pipeline allocates and frees many small buffers per event across threads;
/// glibc's malloc spent about 40 % of the CPU of a saturated run in allocation (perf).
/// Its 2.x line (Cargo feature `v2`): with 3.x the resident memory with ~95k events
/// waiting in a sink's buffer was 1.28-1.37× their payload against 1.14-1.16× (3.x keeps
/// more resident for the same live data; glibc: 0.98×), for the same instructions per
/// event (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
