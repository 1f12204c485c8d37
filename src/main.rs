//! The `m365-forwarder` binary: command line, signals and exit codes.

mod allocator;
mod cli;

#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

/// The C libraries (librdkafka above all) allocate with glibc's malloc. Its default lets
/// the heap shrink whenever 128 KiB are free at its top, so the memory of produce requests
/// was faulted in afresh again and again: 21k page faults and ~8 % of the CPU in the
/// kernel's page clearing for 50k events to Kafka (perf). 16 MiB of padding keeps it (the
/// pages stay mapped, not resident, until used). Setting the padding also fixes glibc's
/// mmap threshold at its 128 KiB default (no longer adjusted upwards); measured with a 4 MiB
/// threshold as well, the faults did not change. `GLIBC_TUNABLES` with a `top_pad` of its
/// own wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_c_malloc() {
    const TOP_PAD: libc::c_int = 16 << 20;
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("top_pad")) {
        return;
    }
    // SAFETY: called first thing in `main`, before any thread exists; `mallopt` only sets
    // a parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_c_malloc() {}

fn main() -> std::process::ExitCode {
    tune_c_malloc();
    cli::main()
}
